/* sluice control: the migration control plane (control/README.md). */
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/dsn.h"
#include "../control/ctl.h"
#include "cli.h"

#define MAX_ENTRIES 256

typedef struct lines {
    char *owned[MAX_ENTRIES];
    ctl_db_entry dbs[MAX_ENTRIES];
    ctl_token toks[MAX_ENTRIES];
    size_t n, ndbs, ntoks;
} lines;

static void lines_free(lines *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->owned[i]);
}

/* Reads FILE line by line (blank lines and # comments skipped) into
 * owned copies; kind 'd': NAME=DSN, kind 't': ROLE TOKEN. */
static int read_lines(const char *path, int kind, lines *l)
{
    const char *opt = kind == 'd' ? "--db-file" : "--tokens";
    FILE *f = fopen(path, "r");
    if (!f)
        return cli_fail("cannot read %s \"%s\"", opt, path);
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return cli_fail("%s \"%s\" is not a file", opt, path);
    }
    char buf[4096];
    int lineno = 0, st = -1;
    while (st < 0 && fgets(buf, sizeof buf, f)) {
        lineno++;
        buf[strcspn(buf, "\r\n")] = 0;
        /* trailing blanks would become part of a token or DSN */
        for (size_t n = strlen(buf); n && (buf[n - 1] == ' ' || buf[n - 1] == '\t');)
            buf[--n] = 0;
        char *s = buf + strspn(buf, " \t");
        if (!*s || *s == '#')
            continue;
        if (l->n == MAX_ENTRIES) {
            st = cli_fail("%s: more than %d entries", path, MAX_ENTRIES);
            break;
        }
        char *copy = strdup(s);
        if (!copy) {
            st = cli_fail("out of memory");
            break;
        }
        l->owned[l->n++] = copy;
        if (kind == 'd') {
            char *eq = strchr(copy, '=');
            if (!eq || eq == copy || !eq[1]) {
                st = cli_fail("%s line %d: expected NAME=DSN", path, lineno);
                break;
            }
            *eq = 0;
            for (size_t i = 0; i < l->ndbs; i++)
                if (strcmp(l->dbs[i].name, copy) == 0)
                    st = cli_fail("%s line %d: database \"%.60s\" is named twice", path, lineno,
                                  copy);
            if (st >= 0)
                break;
            l->dbs[l->ndbs].name = copy;
            l->dbs[l->ndbs++].dsn = eq + 1;
        } else {
            char *sp = strpbrk(copy, " \t");
            if (!sp) {
                st = cli_fail("%s line %d: expected ROLE TOKEN (role operator or approver)", path,
                              lineno);
                break;
            }
            *sp = 0;
            char *tok = sp + 1 + strspn(sp + 1, " \t");
            if (strcmp(copy, "operator") != 0 && strcmp(copy, "approver") != 0) {
                st = cli_fail("%s line %d: role \"%.40s\" is not operator or approver", path,
                              lineno, copy);
                break;
            }
            if (strlen(tok) < 16) {
                st = cli_fail("%s line %d: a token must be at least 16 characters", path, lineno);
                break;
            }
            for (size_t i = 0; i < l->ntoks; i++)
                if (strcmp(l->toks[i].token, tok) == 0)
                    st = cli_fail("%s line %d: the same token is listed twice; give each role "
                                  "its own",
                                  path, lineno);
            if (st >= 0)
                break;
            l->toks[l->ntoks].role = copy;
            l->toks[l->ntoks++].token = tok;
        }
    }
    fclose(f);
    if (st < 0 && kind == 'd' && l->ndbs == 0)
        st = cli_fail("--db-file %s holds no NAME=DSN line", path);
    return st;
}

static void control_log(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "sluice control: %s\n", line);
}

/* The dashboard next to the binary (build/sluice → control/dashboard), or
 * where a package puts it. */
static const char *default_dashboard(char *buf, size_t len)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *dir = dirname(exe);
        const char *tries[] = {"../control/dashboard", "../../control/dashboard",
                               "../share/sluice/dashboard"};
        for (size_t i = 0; i < 3; i++) {
            snprintf(buf, len, "%s/%s/index.html", dir, tries[i]);
            if (access(buf, R_OK) == 0) {
                snprintf(buf, len, "%s/%s", dir, tries[i]);
                return buf;
            }
        }
    }
    return NULL;
}

static int control_main(int argc, char **argv, char **state_copy);

int cmd_control(int argc, char **argv)
{
    char *state_copy = NULL;
    int st = control_main(argc, argv, &state_copy);
    free(state_copy);
    return st;
}

static int control_main(int argc, char **argv, char **state_copy)
{
    static const struct option opts[] = {{"listen", required_argument, 0, 'l'},
                                         {"state", required_argument, 0, 's'},
                                         {"store", required_argument, 0, 's'}, /* the old name */
                                         {"db-file", required_argument, 0, 'd'},
                                         {"tokens", required_argument, 0, 't'},
                                         {"coordinator", required_argument, 0, 'c'},
                                         {"events", required_argument, 0, 'e'},
                                         {"curve-server-key", required_argument, 0, 'K'},
                                         {"curve-key", required_argument, 0, 'k'},
                                         {"haproxy", required_argument, 0, 'H'},
                                         {"webhook", required_argument, 0, 'w'},
                                         {"dashboard", required_argument, 0, 'D'},
                                         {"tick", required_argument, 0, 'T'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *listen = "127.0.0.1:8080", *state = "sqlite:sluice-control.db", *dbfile = NULL,
               *tokens = NULL, *coord = CLI_DEFAULT_CLIENTS_EP, *events = CLI_DEFAULT_EVENTS_EP,
               *curve_server = NULL, *curve_key = NULL, *haproxy = NULL, *webhook = NULL,
               *dashboard = NULL;
    long tick = 500;
    int ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 'l':
            listen = optarg;
            break;
        case 's':
            /* a PostgreSQL DSN may hold a password: keep a copy, blank argv
             * so ps and /proc/PID/cmdline do not show it */
            free(*state_copy);
            if (!(*state_copy = strdup(optarg)))
                return cli_fail("out of memory");
            state = *state_copy;
            if (strncmp(optarg, "sqlite:", 7) != 0 &&
                (strncmp(optarg, "postgres", 8) == 0 || strchr(optarg, '=')))
                memset(optarg, '*', strlen(optarg));
            break;
        case 'd':
            dbfile = optarg;
            break;
        case 't':
            tokens = optarg;
            break;
        case 'c':
            coord = optarg;
            break;
        case 'e':
            events = optarg;
            break;
        case 'K':
            curve_server = optarg;
            break;
        case 'k':
            curve_key = optarg;
            break;
        case 'H':
            haproxy = optarg;
            break;
        case 'w':
            webhook = optarg;
            break;
        case 'D':
            dashboard = optarg;
            break;
        case 'T':
            tick = strtol(optarg, &end, 10);
            if (*end || tick < 50 || tick > 60000)
                return cli_fail("--tick must be milliseconds from 50 to 60000, not \"%s\"", optarg);
            break;
        case 'h':
            printf(
                "usage: sluice control --db-file FILE --tokens FILE [options]\n"
                "  the migration control plane: an HTTP API that takes migration manifests\n"
                "  and drives them phase by phase (control/README.md)\n"
                "  --listen HOST:PORT      HTTP address (default 127.0.0.1:8080)\n"
                "  --state WHERE           the control database: sqlite:PATH, or a PostgreSQL\n"
                "                          DSN (postgresql://... or host=... dbname=...)\n"
                "                          (default sqlite:sluice-control.db)\n"
                "  --db-file FILE          lines NAME=DSN: how the control plane reaches the\n"
                "                          databases the workers announce (replication set-up,\n"
                "                          schema and aggregate checks)\n"
                "  --tokens FILE           lines ROLE TOKEN (operator or approver) for POST calls\n"
                "  --coordinator EP        the coordinator's client endpoint (default %s)\n"
                "  --events EP             its event endpoint (default %s)\n"
                "  --curve-server-key KEY, --curve-key FILE   CURVE, as for sluice submit\n"
                "  --haproxy SOCKET        HAProxy's runtime API socket (path or HOST:PORT)\n"
                "  --webhook URL           POST every audit event there (http://)\n"
                "  --dashboard DIR         the dashboard's files (default: found next to sluice)\n",
                CLI_DEFAULT_CLIENTS_EP, CLI_DEFAULT_EVENTS_EP);
            return 0;
        default:
            return cli_fail(
                "control: unknown or incomplete option \"%s\"; see sluice control --help",
                argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_fail("control: unexpected argument \"%s\"", argv[optind]);
    if (!tokens)
        return cli_fail("control needs --tokens FILE (lines ROLE TOKEN): without it nobody could "
                        "change a migration");
    char host[64];
    const char *colon = strrchr(listen, ':');
    char *end;
    long port = colon && colon[1] ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof host || port < 0 || *end ||
        port > 65535)
        return cli_fail("--listen wants HOST:PORT, e.g. 127.0.0.1:8080, not \"%s\"", listen);
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = 0;
    lines dl = {0}, tl = {0};
    int st = dbfile ? read_lines(dbfile, 'd', &dl) : -1;
    if (st < 0)
        st = read_lines(tokens, 't', &tl);
    if (st < 0 && tl.ntoks == 0)
        st = cli_fail("--tokens %s holds no token", tokens);
    cli_curve cc;
    if (st < 0)
        st = cli_curve_load(&cc, curve_server, curve_key);
    char dashbuf[PATH_MAX];
    if (!dashboard)
        dashboard = default_dashboard(dashbuf, sizeof dashbuf);
    ctl *c = NULL;
    if (st < 0) {
        ctl_opts o = {.store_path = state,
                      .dbs = dl.dbs,
                      .ndbs = dl.ndbs,
                      .tokens = tl.toks,
                      .ntokens = tl.ntoks,
                      .coordinator = {.clients_endpoint = coord,
                                      .events_endpoint = events,
                                      .curve_server_key = cc.on ? cc.server : NULL,
                                      .curve_secret_key = cc.has_secret ? cc.secret : NULL},
                      .haproxy_socket = haproxy,
                      .webhook_url = webhook,
                      .dashboard_dir = dashboard,
                      .tick_ms = (int)tick,
                      /* the crash tests' hook (tests/integration/test_control_crash.py) */
                      .crash_at = getenv("SLUICE_CONTROL_CRASH_AT"),
                      .log = control_log};
        sl_err err = {0};
        if (!(c = ctl_new(&o, &err)) || ctl_http_start(c, host, (int)port, &err) != 0)
            st = cli_fail("%s", err.msg);
    }
    lines_free(&dl);
    lines_free(&tl);
    if (st >= 0) {
        ctl_free(c);
        return st;
    }
    cli_catch_signals();
    char shown[512];
    dsn_redact(state, shown, sizeof shown); /* a PostgreSQL --state may hold a password */
    fprintf(stderr, "sluice control: listening on http://%s:%d/ (state %s)\n", host,
            ctl_http_port(c), shown);
    sl_err err = {0};
    int r = ctl_run(c, cli_stop_flag(), &err);
    if (r != 0)
        fprintf(stderr, "sluice: %s\n", err.msg);
    ctl_free(c);
    fprintf(stderr, "sluice control: stopped\n");
    return r == 0 ? 0 : 2;
}
