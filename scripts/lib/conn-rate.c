// The bench's P4 connection-rate pair (scripts/bench builds it with cc; no dependencies).
//
//   conn-rate server PORT                  accept and close, forever
//   conn-rate client SECONDS ADDR:PORT...  connect and close with a reset (SO_LINGER 0, so no
//                                          TIME_WAIT) as fast as it can, round-robin over the
//                                          targets; after a 0.5 s warm-up, counts SECONDS of it
//                                          and prints rate=, connects=, failed=, seconds=,
//                                          cpu_us= (the client's CPU time per connect)
//
// One blocking connect at a time: each one is the client's SYN through the node's hooks to the
// backend and its SYN-ACK back, so the rate is the inverse of one connection's path. Those
// packets are mostly processed in the client's own system calls (veth hands them to the softirq
// of the sending CPU), so its CPU time per connect is the path's cost, and moves less than the
// rate when other work shares the machine.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double clock_seconds(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double now(void) { return clock_seconds(CLOCK_MONOTONIC); }

static int server(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0), on = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 4096) < 0) {
        perror("conn-rate server");
        return 1;
    }
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c >= 0) close(c);
    }
}

// Connects and resets until `end`; returns the connects made, adds failures to *failed.
static long run(const struct sockaddr_in *targets, int count, double end, long *failed) {
    const struct linger reset = {.l_onoff = 1, .l_linger = 0};
    long done = 0;
    for (int i = 0; now() < end; i = (i + 1) % count) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) {
            perror("conn-rate client: socket");
            exit(1);
        }
        setsockopt(s, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
        if (connect(s, (const struct sockaddr *)&targets[i], sizeof targets[i]) == 0)
            done++;
        else
            (*failed)++;
        close(s);
    }
    return done;
}

static int client(double seconds, int count, char **specs) {
    struct sockaddr_in *targets = calloc((size_t)count, sizeof *targets);
    for (int i = 0; i < count; i++) {
        char *colon = strrchr(specs[i], ':');
        if (!colon) {
            fprintf(stderr, "conn-rate client: not ADDR:PORT: %s\n", specs[i]);
            return 2;
        }
        *colon = 0;
        targets[i].sin_family = AF_INET;
        targets[i].sin_port = htons((unsigned short)atoi(colon + 1));
        if (inet_pton(AF_INET, specs[i], &targets[i].sin_addr) != 1) {
            fprintf(stderr, "conn-rate client: not an IPv4 address: %s\n", specs[i]);
            return 2;
        }
    }
    long failed = 0;
    run(targets, count, now() + (seconds < 0.5 ? seconds : 0.5), &failed);   // warm-up
    failed = 0;
    double start = now(), cpu = clock_seconds(CLOCK_PROCESS_CPUTIME_ID);
    long done = run(targets, count, start + seconds, &failed);
    double elapsed = now() - start;
    cpu = clock_seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu;
    printf("rate=%.1f\nconnects=%ld\nfailed=%ld\nseconds=%.3f\ncpu_us=%.2f\n", (double)done / elapsed, done, failed, elapsed,
           done ? 1e6 * cpu / (double)done : 0.0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "server") == 0) return server(atoi(argv[2]));
    if (argc >= 4 && strcmp(argv[1], "client") == 0) return client(atof(argv[2]), argc - 3, argv + 3);
    fprintf(stderr, "usage: conn-rate server PORT | conn-rate client SECONDS ADDR:PORT...\n");
    return 2;
}
