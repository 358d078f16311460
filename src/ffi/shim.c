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
