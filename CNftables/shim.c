#include "cnftables.h"
