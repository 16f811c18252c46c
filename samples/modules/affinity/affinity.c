/* A privilege module in C (docs/modules.md): pins a pool's workers to CPUs. Settings: { "cpus": "0,2" }. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The host hands settings over as compact JSON with string values: {"cpus":"0,2"}. */
static int parse(const char *json, cpu_set_t *set, char *error, size_t length) {
    const char *p = strstr(json, "\"cpus\":\"");
    char *end;
    CPU_ZERO(set);
    for (p = p ? p + 8 : NULL; p != NULL; p = end + 1) {
        errno = 0;
        long cpu = strtol(p, &end, 10);
        if (end == p || errno != 0 || cpu < 0 || cpu >= CPU_SETSIZE || (*end != ',' && *end != '"'))
            break;
        CPU_SET(cpu, set);
        if (*end == '"')
            return 0;
    }
    snprintf(error, length, "expects { \"cpus\": \"0,2\" }: CPU numbers from 0 to %d, separated by commas", CPU_SETSIZE - 1);
    return 1;
}

int validate(const char *config_json, char *error_buffer, size_t length) {
    cpu_set_t set;
    return parse(config_json, &set, error_buffer, length);
}

/* Stage 1, root, main thread: the exec keeps this thread's affinity and every later thread inherits it. */
int apply(const char *config_json, char *error_buffer, size_t length) {
    cpu_set_t set;
    if (parse(config_json, &set, error_buffer, length) != 0)
        return 1;
    if (sched_setaffinity(0, sizeof set, &set) == 0)
        return 0;
    snprintf(error_buffer, length, "sched_setaffinity: %s (none of these CPUs is available here)", strerror(errno));
    return 1;
}
