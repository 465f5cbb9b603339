/*
 * maxrss: stands in for a CNI plugin and records the plugin's own peak RSS.
 *
 * Installed as <dir>/<plugin> with the real binary at <dir>/real/<plugin>: runs the real one
 * with the same arguments, environment, stdin and stdout, and appends
 * "<plugin> <CNI_COMMAND> <VmHWM KiB>" to $KRAFTY_BENCH_RSS_LOG.
 *
 * Why not wait4's ru_maxrss: it is the maximum over the process, the address space it was
 * forked from (Linux records the old mm's high-water mark at execve: the Go driver's several
 * MB) and its reaped children (krafty-veth's would be host-local's). Instead the plugin runs
 * under ptrace with PTRACE_O_TRACEEXIT, and at its exit stop, when its address space still
 * exists, its VmHWM is read from /proc/<pid>/status: the plugin's own peak, nothing else.
 */
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

static long vm_hwm_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *status = fopen(path, "r");
    if (!status)
        return -1;
    while (fgets(line, sizeof line, status))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
            break;
    fclose(status);
    return kib;
}

int main(int argc, char **argv)
{
    (void)argc;
    char dir_buf[PATH_MAX], name_buf[PATH_MAX], real[PATH_MAX];
    snprintf(dir_buf, sizeof dir_buf, "%s", argv[0]);
    snprintf(name_buf, sizeof name_buf, "%s", argv[0]);
    const char *name = basename(name_buf);
    snprintf(real, sizeof real, "%s/real/%s", dirname(dir_buf), name);

    pid_t pid = fork();
    if (pid < 0) {
        perror("maxrss: fork");
        return 127;
    }
    if (pid == 0) {
        ptrace(PTRACE_TRACEME, 0, NULL, NULL);
        raise(SIGSTOP); /* lets the parent set its options before the exec */
        argv[0] = real;
        execv(real, argv);
        perror("maxrss: execv");
        _exit(127);
    }
    int status;
    long peak_kib = -1;
    waitpid(pid, &status, 0); /* the SIGSTOP above */
    ptrace(PTRACE_SETOPTIONS, pid, NULL, (void *)(PTRACE_O_TRACEEXIT | PTRACE_O_TRACEEXEC));
    ptrace(PTRACE_CONT, pid, NULL, NULL);
    while (waitpid(pid, &status, 0) == pid && WIFSTOPPED(status)) {
        int deliver = 0;
        if (status >> 8 == (SIGTRAP | (PTRACE_EVENT_EXIT << 8)))
            peak_kib = vm_hwm_kib(pid);
        else if (status >> 8 != (SIGTRAP | (PTRACE_EVENT_EXEC << 8)))
            deliver = WSTOPSIG(status); /* a real signal: pass it on */
        ptrace(PTRACE_CONT, pid, NULL, (void *)(long)deliver);
    }
    const char *log = getenv("KRAFTY_BENCH_RSS_LOG");
    const char *command = getenv("CNI_COMMAND");
    FILE *out = log ? fopen(log, "a") : NULL;
    if (out) {
        fprintf(out, "%s %s %ld\n", name, command ? command : "-", peak_kib);
        fclose(out);
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}
