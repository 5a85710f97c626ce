/* Network namespaces of the chaos suite (netns.c). */
#ifndef TR_CHAOS_NETNS_H
#define TR_CHAOS_NETNS_H

#define CN_MAX 7
#define CN_SERVICE_HOST "10.99.0.1" /* the tool server and the mock LLM listen here */

/* Move this process into a private network namespace and make n node
 * namespaces routed from it: hosts[i] is node i's address, paths[i] the
 * namespace file to start it in. 0, or -1 with the reason on stderr. */
int cn_setup(int n, char hosts[][64], char paths[][128]);
/* Cut the nodes side[0..n-1] (0-based) off from every other node, and back. */
int cn_partition(const int *side, int n);
int cn_heal(const int *side, int n);
void cn_teardown(void);

#endif
