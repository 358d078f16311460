/* C helpers for what nginx offers only as macros or static inline functions.
 * Each is a one-line wrapper; the logic stays in Rust. */
#ifndef NGX_PYTHON_SHIM_H
#define NGX_PYTHON_SHIM_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

/* NGX_MODULE_SIGNATURE: a macro built from ngx_auto_config.h; dynamic module
 * loading refuses a module whose signature differs from the binary's. */
extern const char ngx_python_module_signature[];

void ngx_python_add_timer(ngx_event_t *ev, ngx_msec_t timer);
void ngx_python_del_timer(ngx_event_t *ev);
ngx_int_t ngx_python_post_event(ngx_event_t *ev);
void ngx_python_unpost_event(ngx_event_t *ev);

/* Detach a connection whose fd Python owns from the event loop: events,
 * timers, posted events. `closing`: the fd is closed (or about to be), so
 * the kernel drops it from epoll by itself. */
void ngx_python_close_events(ngx_connection_t *c, ngx_uint_t closing);

/* 1 when the connection is TLS (`c->ssl` exists only when nginx is built
 * with SSL): WSGI's url_scheme. */
ngx_uint_t ngx_python_connection_is_ssl(ngx_connection_t *c);

#endif
