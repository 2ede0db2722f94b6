#define _GNU_SOURCE
#include <sched.h>
#include "cnftables.h"

int cnft_enter_netns(int fd)
{
	return setns(fd, CLONE_NEWNET);
}
