/* Everything bindgen binds: nginx's headers for the configured tree, and the
 * shim's declarations. */
#include <ngx_config.h>
#include <ngx_core.h>
#include <nginx.h>
#include <ngx_event.h>
#include <ngx_event_connect.h>
#include <ngx_http.h>
#if NGX_PYTHON_STREAM
#include <ngx_stream.h>
#endif
#include "shim.h"
