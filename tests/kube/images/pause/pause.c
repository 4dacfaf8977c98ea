/*
 * The sandbox ("infra") process of the bench cluster's pods: it holds the pod's
 * namespaces open and does nothing else. As PID 1 of a shared PID namespace it must
 * also collect orphaned children, and it must exit on SIGTERM/SIGINT (PID 1 has no
 * default signal actions, so without handlers it would ignore them).
 *
 * Written for nettrace's test bench; built with `gcc -static -Os` into a FROM-scratch
 * image (tests/kube/images/pause/Containerfile).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    sigset_t wanted;
    int sig;

    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        puts("nt-pause 1");
        return 0;
    }

    /* Take the signals synchronously: no handlers, no races. */
    sigemptyset(&wanted);
    sigaddset(&wanted, SIGTERM);
    sigaddset(&wanted, SIGINT);
    sigaddset(&wanted, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &wanted, NULL) != 0) {
        perror("nt-pause: sigprocmask");
        return 1;
    }

    for (;;) {
        if (sigwait(&wanted, &sig) != 0)
            continue;
        if (sig == SIGCHLD) {
            /* Reap every child that has exited, not just the one that signalled. */
            while (waitpid(-1, NULL, WNOHANG) > 0)
                ;
            continue;
        }
        return 0; /* SIGTERM or SIGINT */
    }
}
