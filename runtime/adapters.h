/* Private helpers shared by the I/O adapters (http.c, proc.c, httpd.c).
 * Not for use outside runtime/. */
#ifndef TR_RUNTIME_ADAPTERS_H
#define TR_RUNTIME_ADAPTERS_H

/* Writes to a closed pipe or socket must fail with EPIPE, not kill the
 * process: set SIGPIPE to ignored unless the application chose a handler.
 * Thread-safe; does its work once per process. */
void tr__sigpipe_ignore(void);

#endif
