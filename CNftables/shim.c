#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include "cnftables.h"

int cnft_enter_netns(int fd)
{
	return setns(fd, CLONE_NEWNET);
}

int cnft_receive_many(int fd, struct iovec *buffers, unsigned int count, size_t *lengths, int blocking)
{
	struct mmsghdr messages[CNFT_RECEIVE_MANY_MAX];
	unsigned int i;
	int received;

	if (count > CNFT_RECEIVE_MANY_MAX)
		count = CNFT_RECEIVE_MANY_MAX;
	memset(messages, 0, sizeof(messages[0]) * count);
	for (i = 0; i < count; i++) {
		messages[i].msg_hdr.msg_iov = &buffers[i];
		messages[i].msg_hdr.msg_iovlen = 1;
	}
	received = recvmmsg(fd, messages, count, MSG_TRUNC | (blocking ? MSG_WAITFORONE : MSG_DONTWAIT), NULL);
	if (received < 0)
		return -1;
	for (i = 0; i < (unsigned int)received; i++) {
		if (messages[i].msg_hdr.msg_flags & MSG_TRUNC) {
			lengths[i] = messages[i].msg_len;
			errno = EMSGSIZE;
			return -1;
		}
		lengths[i] = messages[i].msg_len;
	}
	return received;
}
