/* LD_PRELOAD shim for wrk: forget the TLS session before every reconnect.
 *
 * wrk 4.1 closes a connection with SSL_shutdown() + SSL_clear() and reuses the SSL
 * object, and SSL_clear() keeps a cleanly shut down session, so the next SSL_connect()
 * offers the ticket it received and the "new connection" test measures resumed (PSK)
 * handshakes. Dropping the session first forces a full handshake every time.
 * Build: gcc -O2 -shared -fPIC -o noresume.so noresume.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
typedef struct ssl_st SSL;
int SSL_clear(SSL *s) {
    static int (*real_clear)(SSL *);
    static int (*set_session)(SSL *, void *);
    if (!real_clear) {
        real_clear = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
        set_session = (int (*)(SSL *, void *))dlsym(RTLD_NEXT, "SSL_set_session");
    }
    set_session(s, NULL);
    return real_clear(s);
}
