#include "shim.h"

const char ngx_python_module_signature[] = NGX_MODULE_SIGNATURE;

void
ngx_python_add_timer(ngx_event_t *ev, ngx_msec_t timer)
{
    ngx_add_timer(ev, timer);
}

void
ngx_python_del_timer(ngx_event_t *ev)
{
    if (ev->timer_set) {
        ngx_del_timer(ev);
    }
}

ngx_int_t
ngx_python_post_event(ngx_event_t *ev)
{
    ngx_post_event(ev, &ngx_posted_events);
    return NGX_OK;
}

void
ngx_python_unpost_event(ngx_event_t *ev)
{
    if (ev->posted) {
        ngx_delete_posted_event(ev);
    }
}

void
ngx_python_close_events(ngx_connection_t *c, ngx_uint_t closing)
{
    ngx_uint_t  flags = closing ? NGX_CLOSE_EVENT : 0;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }
    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }
    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, flags);
    }
    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, flags);
    }
    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }
    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }
}

ngx_uint_t
ngx_python_connection_is_ssl(ngx_connection_t *c)
{
#if (NGX_SSL)
    return c->ssl != NULL;
#else
    (void) c;
    return 0;
#endif
}
