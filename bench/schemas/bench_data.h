/* The data both benchmarks encode: a typical llm.completed journal event and
 * a typical CreateRun request frame. Shared by the C and C++ programs so they
 * do the same work. */
#ifndef TR_BENCH_SCHEMAS_DATA_H
#define TR_BENCH_SCHEMAS_DATA_H

#define BD_RUN_ID "run_01HZX3K9QW8T2V7M4N6P5R3S1A"
#define BD_MODEL "gpt-4o-mini-2024-07-18"
#define BD_CONTENT                                                             \
  "I'll look up the current exchange rate and the shipping costs before "     \
  "answering. The customer asked whether ordering the replacement part from " \
  "the EU warehouse is cheaper than the US one once duties are included, so " \
  "I need today's EUR/USD rate, the weight-based shipping tables of both "    \
  "warehouses and the duty schedule for category 8483 (transmission parts). " \
  "I will compare the landed cost for quantities of 1, 5 and 20 units and "   \
  "report the cheaper option with a short breakdown."
#define BD_CALL1_ID "call_9f2b61c0a4d3"
#define BD_CALL1_NAME "web_search"
#define BD_CALL1_ARGS "{\"query\":\"EUR USD exchange rate today\",\"max_results\":3}"
#define BD_CALL2_ID "call_1c77e0b95a28"
#define BD_CALL2_NAME "http_get"
#define BD_CALL2_ARGS                                                          \
  "{\"url\":\"https://shipping.example.com/v2/rates?from=DE&to=US&kg=2.4\"}"
#define BD_REQ_ID "chatcmpl-9XbQ2Lr7TQmZy4K1c0VwE5aH8nDp"
#define BD_SEQ 42
#define BD_TIME 1732240000123456LL
#define BD_EPOCH 3
#define BD_STEP 7

#define BD_API_KEY "trp_live_6Xq2W9mZ0c3Lr8T1vB5nK4yH7aJ"
#define BD_GOAL                                                                \
  "Find the cheapest way to get 20 replacement gearbox bearings (SKF "        \
  "6205-2RS) delivered to our Denver plant within 10 days, including "        \
  "duties, and draft a purchase order for approval."
#define BD_SYSTEM                                                              \
  "You are a procurement assistant for a mid-sized manufacturer. Use the "    \
  "tools to gather prices, shipping costs and lead times. Never place an "    \
  "order yourself: draft it and ask for approval. Cite every number you "     \
  "use with the tool call it came from. Answer in English, concisely."
#define BD_TOOL1 "web_search"
#define BD_TOOL2 "http_get"
#define BD_TOOL3 "draft_purchase_order"
#define BD_METADATA "{\"user\":\"alice@example.com\",\"ticket\":\"PRC-2291\"}"
#define BD_IDEM "3f1c9a7e-5d2b-4e8a-9c61-0b7d2e4f8a15"

#endif
