/* session.h - what other modules may read of a session (serialization saves live parameters). */
#ifndef WH_SESSION_H
#define WH_SESSION_H

#include "whale.h"

/* The graph a session runs (borrowed). */
wh_graph *wh__session_graph(const wh_session *s);
/* Current contents of parameter p (numel * dtype size bytes), or NULL if p is not a parameter. */
const void *wh__session_param_data(const wh_session *s, wh_value p);

/* Parameters split over the ranks of a replica (operator sharding). */
int wh__session_sharded(const wh_session *s);

#endif
