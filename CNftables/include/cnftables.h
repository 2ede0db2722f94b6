#ifndef CNFTABLES_H
#define CNFTABLES_H
/* The C shim over libnftnl and libmnl. It holds only what Swift cannot call directly
 * (macros, variadic helpers, constants); every function is named cnft_ and says why it exists. */
#include <stdint.h>

#endif
