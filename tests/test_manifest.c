/* manifest: the example and defaults, an error naming the field for
 * every way a field can be wrong, unknown fields at every level, duplicate
 * keys, the JSON round trip, change windows, classification, and garbage
 * that must give an error rather than a crash. */
#include <stdlib.h>
#include <string.h>

#include "../control/manifest.h"
#include "tap.h"

/* Test manifests are written with ' for " (a literal ' is \u0027). */
static char *dq(const char *s)
{
    char *o = strdup(s);
    for (char *p = o; *p; p++)
        if (*p == '\'')
            *p = '"';
    return o;
}

static ct_manifest *parse_q(const char *s, sl_err *e)
{
    char *j = dq(s);
    ct_manifest *m = ct_manifest_parse(j, strlen(j), e);
    free(j);
    return m;
}

static int one_line(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20)
            return 0;
    return 1;
}

/* Parsing s fails with SL_INVALID and a one-line message holding want
 * (where ' stands for " and ` for '). */
static void refused(const char *s, const char *want)
{
    sl_err e = {0};
    ct_manifest *m = parse_q(s, &e);
    char *w = dq(want);
    for (size_t i = 0; w[i]; i++)
        if (want[i] == '`')
            w[i] = '\'';
    ok(!m && e.code == SL_INVALID && strstr(e.msg, w) && one_line(e.msg), "refused [%s]: %s", w,
       e.msg);
    free(w);
    ct_manifest_free(m);
}

#define BASE "{'migration_id':'m','scope':{'source':'a','target':'b','tables':['t']}"
#define WITH(x) BASE x "}"
#define SCOPE(t) "{'migration_id':'m','scope':{'source':'a','target':'b','tables':" t "}}"
#define SCOPE_VC(t)                                                                                \
    "{'migration_id':'m','metrics':{'verify_changes':true},'scope':{'source':'a','target':'b',"    \
    "'tables':" t "}}"
#define WIN(w) WITH(",'windows':[" w "]")

static const struct {
    const char *json, *want;
} bad_cases[] = {
    {"[1]", "manifest: expected a JSON object, got an array"},
    {"'x'", "expected a JSON object, got a string"},
    {"{'migration_id':'m'", "manifest is not valid JSON: "},
    {"", "manifest is not valid JSON"},
    {"{} x", "manifest is not valid JSON"},
    {"{'migration_id':'m','migration_id':'n'}", "duplicate object key"},
    {"{'migration_id':'m','scope':{'source':'a','source':'b'}}", "duplicate object key"},
    {"{'scope':{'source':'a','target':'b','tables':['t']}}", "migration_id: missing"},
    {"{'migration_id':'','scope':{}}", "migration_id: empty"},
    {"{'migration_id':'a b','scope':{}}", "migration_id: 'a b' has a space at position 2"},
    {"{'migration_id':'a/b','scope':{}}", "migration_id: 'a/b' has `/` at position 2"},
    {"{'migration_id':'-x','scope':{}}", "migration_id: '-x' starts with `-`"},
    {"{'migration_id':'.x','scope':{}}", "migration_id: '.x' starts with `.`"},
    {"{'migration_id':5,'scope':{}}", "migration_id: expected a string, got an integer"},
    {"{'migration_id':'m'}", "scope: missing"},
    {"{'migration_id':'m','scope':[]}", "scope: expected an object, got an array"},
    {"{'migration_id':'m','scope':{'target':'b','tables':['t']}}", "scope.source: missing"},
    {"{'migration_id':'m','scope':{'source':'a','tables':['t']}}", "scope.target: missing"},
    {"{'migration_id':'m','scope':{'source':'a/b','target':'b','tables':['t']}}",
     "scope.source: 'a/b' has `/` at position 2"},
    {"{'migration_id':'m','scope':{'source':'a','target':'','tables':['t']}}",
     "scope.target: empty"},
    {"{'migration_id':'m','scope':{'source':'a','target':'a','tables':['t']}}",
     "scope.target: 'a' is the source too; source and target must differ"},
    {"{'migration_id':'m','scope':{'source':'a','target':'b'}}", "scope.tables: missing"},
    {SCOPE("[]"), "scope.tables: empty"},
    {SCOPE("'t'"), "scope.tables: expected an array, got a string"},
    {SCOPE("['t','u','t']"), "scope.tables[2]: 't' is listed twice (also scope.tables[0])"},
    {SCOPE("['t','']"), "scope.tables[1]: empty"},
    {SCOPE("['a\\u0027b']"), "scope.tables[0]: 'a`b' has ``` at position 2"},
    {SCOPE("['a\\'b']"), "scope.tables[0]: 'a\\'b' has `'` at position 2"},
    {SCOPE("['a\\nb']"), "scope.tables[0]: 'a\\x0ab' has byte 0x0a at position 2"},
    {SCOPE("[5]"), "scope.tables[0]: expected a table name or {'name': ..., 'where': ...}, got "
                   "an integer"},
    {SCOPE("[{'where':'x'}]"), "scope.tables[0].name: missing"},
    {SCOPE("[{'name':7}]"), "scope.tables[0].name: expected a string, got an integer"},
    {SCOPE("['t',{'name':'u','where':'id > 5'}]"),
     "scope.tables[1].where: a partial scope is only allowed in a dry run ('dry_run': true)"},
    {"{'dry_run':true,'migration_id':'m','scope':{'source':'a','target':'b','tables':[{'name':"
     "'t','where':''}]}}",
     "scope.tables[0].where: empty"},
    {"{'dry_run':true,'migration_id':'m','scope':{'source':'a','target':'b','tables':[{'name':"
     "'t','where':1}]}}",
     "scope.tables[0].where: expected a string, got an integer"},
    {WITH(",'strategy':'fast'"), "strategy: 'fast' is not a strategy; allowed: cdc, dual_write"},
    {WITH(",'strategy':1"), "strategy: expected a string, got an integer"},
    {WITH(",'phases':[]"), "phases: empty"},
    {WITH(",'phases':'cutover'"), "phases: expected an array, got a string"},
    {WITH(",'phases':['prepare','warmup','cutover']"), "phases[1]: 'warmup' is not a phase"},
    {WITH(",'phases':['cutover','backfill']"), "phases[1]: 'backfill' comes after 'cutover'"},
    {WITH(",'phases':['backfill','backfill','cutover']"),
     "phases[1]: 'backfill' repeats phases[0]"},
    {WITH(",'phases':['prepare','backfill']"), "phases: no 'cutover'"},
    {WITH(",'cutover':[]"), "cutover: expected an object, got an array"},
    {WITH(",'cutover':{'steps':[]}"), "cutover.steps: empty"},
    {WITH(",'cutover':{'steps':[1,50,25,100]}"),
     "cutover.steps[2]: 25 is below the step before it (50); steps rise to 100"},
    {WITH(",'cutover':{'steps':[1,1,100]}"), "cutover.steps[1]: 1 repeats the step before it"},
    {WITH(",'cutover':{'steps':[1,50]}"), "cutover.steps[1]: the last step is 50"},
    {WITH(",'cutover':{'steps':[0,100]}"), "cutover.steps[0]: 0 is out of range"},
    {WITH(",'cutover':{'steps':[1,101]}"), "cutover.steps[1]: 101 is out of range"},
    {WITH(",'cutover':{'steps':[1,'5',100]}"),
     "cutover.steps[1]: expected an integer, got a string"},
    {WITH(",'cutover':{'steps':[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,100]}"),
     "cutover.steps: 17 steps; at most 16"},
    {WITH(",'strategy':'blue_green','cutover':{'steps':[50,100]}"),
     "cutover.steps: blue_green moves all traffic in one step: [100]"},
    {WITH(",'cutover':{'soak_seconds':'60'}"),
     "cutover.soak_seconds: expected an integer, got a string"},
    {WITH(",'cutover':{'soak_seconds':1.5}"),
     "cutover.soak_seconds: expected an integer, got a number"},
    {WITH(",'cutover':{'soak_seconds':-1}"), "cutover.soak_seconds: -1 is below 0"},
    {WITH(",'cutover':{'soak_seconds':86401}"), "cutover.soak_seconds: 86401 is above 86400"},
    {WITH(",'metrics':{'audit_every':'5x'}"),
     "metrics.audit_every: '5x' is not a duration; use e.g. '30s', '5m', '1h'"},
    {WITH(",'metrics':{'audit_every':'s'}"), "metrics.audit_every: 's' is not a duration"},
    {WITH(",'metrics':{'audit_every':'-5m'}"), "metrics.audit_every: '-5m' is not a duration"},
    {WITH(",'metrics':{'audit_every':'5 m'}"), "metrics.audit_every: '5 m' is not a duration"},
    {WITH(",'metrics':{'audit_every':'99999999999h'}"),
     "metrics.audit_every: '99999999999h' is not a duration"},
    {WITH(",'metrics':{'audit_every':'169h'}"), "metrics.audit_every: '169h' is out of range"},
    {WITH(",'metrics':{'sample_every':'0s'}"), "metrics.sample_every: '0s' is out of range"},
    {WITH(",'metrics':{'sample_every':0}"), "metrics.sample_every: 0 seconds is out of range"},
    {WITH(",'metrics':{'sample_every':604801}"), "metrics.sample_every: 604801 seconds"},
    {WITH(",'metrics':{'audit_every':true}"),
     "metrics.audit_every: expected a duration (a string such as '5m' or an integer of "
     "seconds), got a boolean"},
    {WITH(",'abort_thresholds':{'divergent_rows':-1}"),
     "abort_thresholds.divergent_rows: -1 is below 0"},
    {WITH(",'abort_thresholds':{'divergent_rows':0.5}"),
     "abort_thresholds.divergent_rows: expected an integer, got a number"},
    {WITH(",'abort_thresholds':{'replication_lag_seconds':0}"),
     "abort_thresholds.replication_lag_seconds: 0 is not above 0"},
    {WITH(",'abort_thresholds':{'replication_lag_seconds':'30'}"),
     "abort_thresholds.replication_lag_seconds: expected a number, got a string"},
    {WITH(",'abort_thresholds':{'detection_latency_seconds':0}"),
     "abort_thresholds.detection_latency_seconds: 0 is below 1"},
    {WITH(",'abort_thresholds':{'unreachable_seconds':0}"),
     "abort_thresholds.unreachable_seconds: 0 is below 1"},
    {WITH(",'abort_thresholds':{'unreachable_seconds':86401}"),
     "abort_thresholds.unreachable_seconds: 86401 is above 86400"},
    {WITH(",'abort_thresholds':{'shadow_mismatch_ratio':1.5}"),
     "abort_thresholds.shadow_mismatch_ratio: 1.5 is out of range; allowed: 0..1"},
    {WITH(",'abort_thresholds':{'shadow_mismatch_ratio':-0.1}"),
     "abort_thresholds.shadow_mismatch_ratio: -0.1 is out of range"},
    {WITH(",'windows':{}"), "windows: expected an array, got an object"},
    {WIN("5"), "windows[0]: expected an object, got an integer"},
    {WIN("{'from':'02:00','to':'05:00'}"), "windows[0].days: missing"},
    {WIN("{'days':'mon-fry','from':'02:00','to':'05:00'}"),
     "windows[0].days: 'mon-fry' is not a list of days"},
    {WIN("{'days':'mon-mon','from':'02:00','to':'05:00'}"), "windows[0].days: 'mon-mon'"},
    {WIN("{'days':'mon,','from':'02:00','to':'05:00'}"), "windows[0].days: 'mon,'"},
    {WIN("{'days':'','from':'02:00','to':'05:00'}"), "windows[0].days: ''"},
    {WIN("{'days':'daily','to':'05:00'}"), "windows[0].from: missing"},
    {WIN("{'days':'daily','from':'2:00','to':'05:00'}"),
     "windows[0].from: '2:00' is not a time; use 'HH:MM'"},
    {WIN("{'days':'daily','from':'02:00','to':'24:00'}"), "windows[0].to: '24:00' is not a time"},
    {WIN("{'days':'daily','from':'02:00','to':'02:60'}"), "windows[0].to: '02:60' is not a time"},
    {WIN("{'days':'daily','from':'02:00','to':'02:00'}"), "windows[0].to: '02:00' equals from"},
    {WIN("{'days':'daily','from':'02:00','to':'03:00'},{'days':'x','from':'02:00','to':'03:00'}"),
     "windows[1].days: 'x'"},
    {WIN("{'days':'daily','from':'02:00','to':'05:00','tz':'Europe/Paris'}"),
     "windows[0].tz: 'Europe/Paris' is not supported; only 'UTC' or a fixed offset such as "
     "'+01:00'"},
    {WIN("{'days':'daily','from':'02:00','to':'05:00','tz':'+15:00'}"), "windows[0].tz: '+15:00'"},
    {WIN("{'days':'daily','from':'02:00','to':'05:00','tz':'+1:00'}"), "windows[0].tz: '+1:00'"},
    {WIN("{'days':'daily','from':'02:00','to':'05:00','tz':0}"),
     "windows[0].tz: expected a string, got an integer"},
    {WITH(",'phases':['prepare','cutover'],'approvals':['backfill']"),
     "approvals[0]: 'backfill' is not one of this manifest`s phases"},
    {WITH(",'approvals':['cutover_last_step']"),
     "approvals[0]: 'cutover_last_step' is not a phase"},
    {WITH(",'approvals':['cutover','cutover']"), "approvals[1]: 'cutover' is listed twice"},
    {WITH(",'approvals':'cutover'"), "approvals: expected an array, got a string"},
    {WITH(",'dry_run':'yes'"), "dry_run: expected a boolean, got a string"},
    {WITH(",'dry_run':null"), "dry_run: expected a boolean, got null"},
    {WITH(",'router':'haproxy'"), "router: expected an object, got a string"},
    {WITH(",'router':{'type':'nginx'}"), "router.type: 'nginx' is not a router"},
    {WITH(",'router':{'read_backend':'r'}"), "router.read_backend: only for 'type': 'haproxy'"},
    {WITH(",'router':{'type':'haproxy','read_backend':'r','source_server':'s','target_server':"
          "'t'}"),
     "router.write_backend: missing"},
    {WITH(",'router':{'type':'haproxy','read_backend':'r b','write_backend':'w','source_server':"
          "'s','target_server':'t'}"),
     "router.read_backend: 'r b' has a space"},
    {WITH(",'router':{'type':'haproxy','read_backend':'r','write_backend':'w','source_server':"
          "'s','target_server':'s'}"),
     "router.target_server: 's' is source_server too"},
    {WITH(",'description':5"), "description: expected a string, got an integer"},
    /* unknown fields, at every level */
    {WITH(",'strategie':'cdc'"), "unknown field 'strategie'; allowed: migration_id, scope, "},
    {"{'migration_id':'m','scope':{'source':'a','target':'b','tabels':['t']}}",
     "unknown field 'scope.tabels'; allowed: source, target, tables"},
    {SCOPE("[{'name':'t','filter':'x'}]"),
     "unknown field 'scope.tables[0].filter'; allowed: name, where"},
    {WITH(",'cutover':{'soak':5}"), "unknown field 'cutover.soak'; allowed: steps, soak_seconds"},
    {WITH(",'metrics':{'audit':'5m'}"),
     "unknown field 'metrics.audit'; allowed: audit_every, sample_every"},
    {WITH(",'abort_thresholds':{'lag':5}"),
     "unknown field 'abort_thresholds.lag'; allowed: divergent_rows, replication_lag_seconds"},
    {WIN("{'days':'daily','from':'02:00','to':'05:00','zone':'UTC'}"),
     "unknown field 'windows[0].zone'; allowed: days, from, to, tz"},
    {WITH(",'router':{'backend':'x'}"), "unknown field 'router.backend'; allowed: type, "},
    {WITH(",'router':{'write_frontend':'f'}"), "router.write_frontend: only for 'type': 'haproxy'"},
    {WITH(",'router':{'type':'haproxy','read_backend':'r','write_backend':'w','source_server':"
          "'s','target_server':'t','write_frontend':'f f'}"),
     "router.write_frontend: 'f f' has a space"},
    {WITH(",'a\\u0001\\'':1"), "unknown field 'a\\x01\\''"},
};

static int windows_eq(const ct_window *a, const ct_window *b)
{
    return a->days == b->days && a->from_min == b->from_min && a->to_min == b->to_min &&
           a->utc_offset_min == b->utc_offset_min;
}

static int str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

static int manifest_eq(const ct_manifest *a, const ct_manifest *b)
{
    if (!str_eq(a->id, b->id) || !str_eq(a->source, b->source) || !str_eq(a->target, b->target) ||
        a->ntables != b->ntables || a->strategy != b->strategy || a->nphases != b->nphases ||
        a->nsteps != b->nsteps || a->soak_s != b->soak_s || a->audit_every_s != b->audit_every_s ||
        a->sample_every_s != b->sample_every_s || a->verify_changes != b->verify_changes ||
        a->max_divergent_rows != b->max_divergent_rows || a->max_lag_s != b->max_lag_s ||
        a->detection_latency_s != b->detection_latency_s || a->unreachable_s != b->unreachable_s ||
        a->max_shadow_ratio != b->max_shadow_ratio || a->nwindows != b->nwindows ||
        a->approvals != b->approvals || a->dry_run != b->dry_run ||
        a->router.haproxy != b->router.haproxy ||
        !str_eq(a->router.read_backend, b->router.read_backend) ||
        !str_eq(a->router.write_backend, b->router.write_backend) ||
        !str_eq(a->router.source_server, b->router.source_server) ||
        !str_eq(a->router.target_server, b->router.target_server) ||
        !str_eq(a->router.write_frontend, b->router.write_frontend) ||
        !str_eq(a->description, b->description))
        return 0;
    for (size_t i = 0; i < a->ntables; i++)
        if (!str_eq(a->tables[i].name, b->tables[i].name) ||
            !str_eq(a->tables[i].where, b->tables[i].where))
            return 0;
    for (size_t i = 0; i < a->nphases; i++)
        if (a->phases[i] != b->phases[i])
            return 0;
    for (size_t i = 0; i < a->nsteps; i++)
        if (a->steps[i] != b->steps[i])
            return 0;
    for (size_t i = 0; i < a->nwindows; i++)
        if (!windows_eq(&a->windows[i], &b->windows[i]))
            return 0;
    return 1;
}

static const char *const round_trips[] = {
    "{'migration_id': 'orders-to-pg16',"
    " 'scope': {'source': 'old', 'target': 'new', 'tables': ['orders', 'customers']},"
    " 'strategy': 'cdc',"
    " 'phases': ['prepare', 'backfill', 'dual_write', 'shadow_read', 'cutover', 'cleanup'],"
    " 'cutover': {'steps': [1, 5, 25, 50, 100], 'soak_seconds': 60},"
    " 'metrics': {'audit_every': '5m', 'sample_every': '10s', 'verify_changes': true},"
    " 'abort_thresholds': {'divergent_rows': 0, 'replication_lag_seconds': 30,"
    "                      'detection_latency_seconds': 60, 'shadow_mismatch_ratio': 0.0},"
    " 'windows': [{'days': 'mon-fri', 'from': '02:00', 'to': '05:00', 'tz': 'UTC'}],"
    " 'approvals': ['cutover']}",
    BASE "}",
    WITH(",'strategy':'blue_green'"),
    WITH(",'strategy':'auto','phases':['backfill','cutover'],'approvals':['backfill','cutover'],"
         "'cutover':{'steps':[10,100],'soak_seconds':0}"),
    "{'dry_run':true,'migration_id':'x_1.y','scope':{'source':'s.1','target':'t-2','tables':["
    "'public.orders',{'name':'Ünïcode tbl','where':'id % 2 = 0 AND note <> \\u0027x\\u0027'},"
    "{'name':'plain'}]}}",
    WITH(",'router':{'type':'haproxy','read_backend':'be_read','write_backend':'be_write',"
         "'source_server':'old','target_server':'new'},'description':'line one\\nline \\'two\\''"),
    WITH(",'router':{'type':'endpoint'},'metrics':{'audit_every':3600,'sample_every':'1h'},"
         "'abort_thresholds':{'divergent_rows':12345678901,'replication_lag_seconds':0.1,"
         "'detection_latency_seconds':7,'shadow_mismatch_ratio':0.001,'unreachable_seconds':3}"),
    WITH(",'windows':[{'days':'fri-mon','from':'22:00','to':'02:00','tz':'-05:30'},"
         "{'days':'mon,wed-fri,sun','from':'00:00','to':'23:59','tz':'Z'},"
         "{'days':'daily','from':'12:00','to':'13:00','tz':'+14:00'},"
         "{'days':'tue,thu','from':'01:00','to':'02:00','tz':'+00:00'}]"),
};

/* 2024-01-01 was a Monday; day 0 = Monday, 6 = Sunday. */
static int64_t at(int day, int h, int mi)
{
    return ((int64_t)(19723 + day) * 86400 + h * 3600 + mi * 60) * 1000;
}

static int in_window(const char *windows, int64_t wall_ms)
{
    sl_err e = {0};
    char buf[1024];
    snprintf(buf, sizeof buf, WITH(",'windows':[%s]"), windows);
    ct_manifest *m = parse_q(buf, &e);
    if (!m) {
        printf("# %s\n", e.msg);
        return -1;
    }
    int r = ct_manifest_in_window(m, wall_ms);
    ct_manifest_free(m);
    return r;
}

static unsigned days_of(const char *days)
{
    char buf[512];
    sl_err e = {0};
    snprintf(buf, sizeof buf, WIN("{'days':'%s','from':'01:00','to':'02:00'}"), days);
    ct_manifest *m = parse_q(buf, &e);
    unsigned d = m ? m->windows[0].days : 0;
    ct_manifest_free(m);
    return d;
}

static ct_side_facts side(const char *engine, int major, const char *id, int logical)
{
    ct_side_facts f;
    memset(&f, 0, sizeof f);
    snprintf(f.engine, sizeof f.engine, "%s", engine);
    snprintf(f.server_id, sizeof f.server_id, "%s", id);
    f.major = major;
    f.logical = logical;
    return f;
}

static void classify(ct_side_facts s, ct_side_facts d, ct_class want_c, ct_strategy want_s,
                     const char *want_reason)
{
    char reason[512];
    ct_strategy st = CT_STRAT_AUTO;
    ct_class c = ct_classify(&s, &d, &st, reason, sizeof reason);
    ok(c == want_c && st == want_s && strstr(reason, want_reason) && one_line(reason),
       "%s %d -> %s %d: %s, %s: %s", s.engine, s.major, d.engine, d.major, ct_class_name(c),
       ct_strategy_name(st), reason);
}

/* Parsing len bytes at p gives a manifest or an SL_INVALID one-liner. */
static int survives(const char *p, size_t len)
{
    sl_err e = {0};
    ct_manifest *m = ct_manifest_parse(p, len, &e);
    int good = m ? e.code == SL_OK : e.code == SL_INVALID && one_line(e.msg) && e.msg[0];
    if (m) {
        char *j = ct_manifest_json(m);
        good = good && j;
        free(j);
    }
    ct_manifest_free(m);
    return good;
}

int main(void)
{
    sl_err e = {0};

    /* write_frontend: the write backend's name unless given */
    ct_manifest *wf = parse_q(WITH(",'router':{'type':'haproxy','read_backend':'r',"
                                   "'write_backend':'w','source_server':'s','target_server':'t'}"),
                              &e);
    ok(wf && !strcmp(wf->router.write_frontend, "w"), "write_frontend defaults to write_backend");
    ct_manifest_free(wf);
    wf = parse_q(WITH(",'router':{'type':'haproxy','read_backend':'r','write_backend':'w',"
                      "'source_server':'s','target_server':'t','write_frontend':'fw'}"),
                 &e);
    ok(wf && !strcmp(wf->router.write_frontend, "fw"), "write_frontend as given");
    ct_manifest_free(wf);

    /* the manifest */
    ct_manifest *m = parse_q(round_trips[0], &e);
    ok(m != NULL, "the issue's manifest parses: %s", e.msg);
    if (m) {
        ok(!strcmp(m->id, "orders-to-pg16") && !strcmp(m->source, "old") &&
               !strcmp(m->target, "new") && m->ntables == 2 &&
               !strcmp(m->tables[0].name, "orders") && !m->tables[0].where &&
               !strcmp(m->tables[1].name, "customers"),
           "id, scope");
        ok(m->strategy == CT_STRAT_CDC && m->nphases == 6 && m->phases[5] == CT_PH_CLEANUP,
           "strategy, phases");
        ok(m->nsteps == 5 && m->steps[0] == 1 && m->steps[4] == 100 && m->soak_s == 60, "cutover");
        ok(m->audit_every_s == 300 && m->sample_every_s == 10, "metrics");
        ok(m->max_divergent_rows == 0 && m->max_lag_s == 30 && m->detection_latency_s == 60 &&
               m->unreachable_s == 10 && m->max_shadow_ratio == 0.0,
           "abort thresholds");
        ok(m->nwindows == 1 && m->windows[0].days == 0x1f && m->windows[0].from_min == 120 &&
               m->windows[0].to_min == 300 && m->windows[0].utc_offset_min == 0,
           "window");
        ok(m->approvals == 1u << CT_PH_CUTOVER && !m->dry_run && !m->router.haproxy &&
               !m->description,
           "approvals, dry_run, router, description");
    }
    ct_manifest_free(m);

    /* the least a manifest may say: every default */
    m = parse_q(BASE "}", &e);
    ok(m && m->strategy == CT_STRAT_AUTO && m->nphases == CT_PH_COUNT && m->nsteps == 5 &&
           m->steps[0] == 1 && m->steps[1] == 5 && m->steps[2] == 25 && m->steps[3] == 50 &&
           m->steps[4] == 100 && m->soak_s == 60 && m->audit_every_s == 300 &&
           m->sample_every_s == 10 && m->max_divergent_rows == 0 && m->max_lag_s == 30 &&
           m->detection_latency_s == 60 && m->max_shadow_ratio == 0 && m->nwindows == 0 &&
           m->approvals == 0 && !m->dry_run && !m->router.haproxy && !m->description,
       "a minimal manifest gets every default");
    for (int p = 0; m && p < CT_PH_COUNT; p++)
        if (m->phases[p] != (ct_phase)p)
            ok(0, "default phase %d", p);
    ct_manifest_free(m);

    m = parse_q(WITH(",'strategy':'blue_green'"), &e);
    ok(m && m->strategy == CT_STRAT_BLUE_GREEN && m->nsteps == 1 && m->steps[0] == 100,
       "blue_green: steps default to [100]");
    ct_manifest_free(m);
    m = parse_q(WITH(",'strategy':'blue_green','cutover':{'steps':[100]}"), &e);
    ok(m && m->nsteps == 1, "blue_green with [100] given: %s", e.msg);
    ct_manifest_free(m);
    m = parse_q(WITH(",'strategy':'auto','metrics':{'audit_every':'1h','sample_every':45}"), &e);
    ok(m && m->strategy == CT_STRAT_AUTO && m->audit_every_s == 3600 && m->sample_every_s == 45,
       "'auto' and durations as a string or integer seconds");
    ct_manifest_free(m);
    m = parse_q(WITH(",'metrics':{'audit_every':'168h','sample_every':'1s'}"), &e);
    ok(m && m->audit_every_s == 7 * 86400 && m->sample_every_s == 1, "durations at the bounds");
    ct_manifest_free(m);
    m = parse_q("{'dry_run':true,'migration_id':'m','scope':{'source':'a','target':'b',"
                "'tables':[{'name':'t','where':'id < 10'}]}}",
                &e);
    ok(m && m->dry_run && !strcmp(m->tables[0].where, "id < 10"), "a where in a dry run: %s",
       e.msg);
    ct_manifest_free(m);
    m = parse_q(WITH(",'windows':[]"), &e);
    ok(m && m->nwindows == 0 && ct_manifest_in_window(m, 0), "no windows: always open");
    ct_manifest_free(m);

    /* every field's errors */
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++)
        refused(bad_cases[i].json, bad_cases[i].want);

    /* limits that need long input */
    {
        char *big = malloc(1 << 21);
        size_t o = (size_t)sprintf(big, "{'migration_id':'m','scope':{'source':'a','target':'b',"
                                        "'tables':[");
        for (int i = 0; i < 257; i++)
            o += (size_t)sprintf(big + o, "%s't%d'", i ? "," : "", i);
        sprintf(big + o, "]}}");
        refused(big, "scope.tables: 257 tables; at most 256");
        o = (size_t)sprintf(big, "{'migration_id':'m','scope':{'source':'a','target':'b',"
                                 "'tables':['");
        memset(big + o, 'x', 128);
        sprintf(big + o + 128, "']}}");
        refused(big, "scope.tables[0]: 'xxxxx");
        memset(big + o, 'x', 127);
        sprintf(big + o + 127, "']}}");
        m = parse_q(big, &e);
        ok(m && strlen(m->tables[0].name) == 127, "a 127-byte table name is fine");
        ct_manifest_free(m);
        o = (size_t)sprintf(big, "{'migration_id':'");
        memset(big + o, 'i', 64);
        sprintf(big + o + 64, "','scope':{}}");
        refused(big, "migration_id: 'iiii");
        o = (size_t)sprintf(big, BASE ",'windows':[");
        for (int i = 0; i < 33; i++)
            o += (size_t)sprintf(big + o, "%s{'days':'daily','from':'01:00','to':'02:00'}",
                                 i ? "," : "");
        sprintf(big + o, "]}");
        refused(big, "windows: 33 windows; at most 32");
        o = (size_t)sprintf(big, BASE ",'description':'");
        memset(big + o, 'd', 1025);
        sprintf(big + o + 1025, "'}");
        refused(big, "description: 1025 bytes; at most 1024");
        o = (size_t)sprintf(big, "{'dry_run':true,'migration_id':'m','scope':{'source':'a',"
                                 "'target':'b','tables':[{'name':'t','where':'");
        memset(big + o, 'w', 4097);
        sprintf(big + o + 4097, "'}]}}");
        refused(big, "scope.tables[0].where: 4097 bytes; a where clause is at most 4096");
        /* a 1 MB string, as a field and as the whole input */
        o = (size_t)sprintf(big, BASE ",'description':'");
        memset(big + o, 'd', 1 << 20);
        sprintf(big + o + (1 << 20), "'}");
        refused(big, "description: 1048576 bytes; at most 1024");
        o = (size_t)sprintf(big, "{'migration_id':'");
        memset(big + o, 'i', 1 << 20);
        sprintf(big + o + (1 << 20), "','scope':{}}");
        refused(big, "migration_id: 'iiii");
        memset(big, 'z', 1 << 20);
        ok(!ct_manifest_parse(big, 1 << 20, &e) && strstr(e.msg, "not valid JSON") &&
               one_line(e.msg),
           "1 MB of garbage: %s", e.msg);
        /* nesting far deeper than any parser should follow */
        memset(big, '[', 1 << 20);
        ok(!ct_manifest_parse(big, 1 << 20, &e) && strstr(e.msg, "not valid JSON"),
           "deeply nested arrays: %s", e.msg);
        o = (size_t)sprintf(big, BASE ",'description':");
        memset(big + o, '[', 100000);
        memset(big + o + 100000, ']', 100000);
        sprintf(big + o + 200000, "}");
        refused(big, "not valid JSON");
        free(big);
    }
    {
        const char nul[] = "{\"migration_id\":\"a\0b\",\"scope\":{}}";
        ok(!ct_manifest_parse(nul, sizeof nul - 1, &e) && strstr(e.msg, "not valid JSON") &&
               one_line(e.msg),
           "a NUL byte inside a string: %s", e.msg);
        const char esc_nul[] = "{\"migration_id\":\"a\\u0000b\",\"scope\":{}}";
        ok(!ct_manifest_parse(esc_nul, sizeof esc_nul - 1, &e) && one_line(e.msg),
           "\\u0000 inside a string: %s", e.msg);
        ok(!ct_manifest_parse(NULL, 0, &e) && e.code == SL_INVALID, "no input: %s", e.msg);
        char *j = dq(BASE "}");
        size_t n = strlen(j);
        ok(!ct_manifest_parse(j, n - 1, &e), "len is honoured: %s", e.msg);
        j[n - 5] = '\0';
        ok(!ct_manifest_parse(j, n, &e) && strstr(e.msg, "not valid JSON"),
           "a NUL byte inside the length: %s", e.msg);
        free(j);
    }
    {
        /* random damage to a full manifest: a manifest or an error, never a crash */
        char *src = dq(round_trips[5]);
        size_t n = strlen(src);
        char *buf = malloc(n + 1);
        unsigned seed = 12345;
        int all = 1;
        for (int i = 0; i < 3000; i++) {
            memcpy(buf, src, n + 1);
            int flips = 1 + i % 4;
            for (int k = 0; k < flips; k++) {
                seed = seed * 1103515245u + 12345u;
                size_t pos = (seed >> 8) % n;
                seed = seed * 1103515245u + 12345u;
                buf[pos] = (char)(seed >> 16);
            }
            seed = seed * 1103515245u + 12345u;
            all &= survives(buf, i % 3 ? n : (seed >> 8) % n);
        }
        ok(all, "3000 damaged manifests: each parses or gives an SL_INVALID line");
        free(buf);
        free(src);
    }

    /* round trip: json of a parsed manifest parses to the same manifest */
    for (size_t i = 0; i < sizeof round_trips / sizeof round_trips[0]; i++) {
        sl_err e1 = {0}, e2 = {0};
        ct_manifest *a = parse_q(round_trips[i], &e1);
        char *j1 = a ? ct_manifest_json(a) : NULL;
        ct_manifest *b = j1 ? ct_manifest_parse(j1, strlen(j1), &e2) : NULL;
        char *j2 = b ? ct_manifest_json(b) : NULL;
        ok(a && b && manifest_eq(a, b) && j2 && !strcmp(j1, j2), "round trip %zu: %s%s%s", i,
           j1 ? j1 : e1.msg, b ? "" : " -> ", b ? "" : e2.msg);
        free(j1);
        free(j2);
        ct_manifest_free(a);
        ct_manifest_free(b);
    }
    m = parse_q(round_trips[1], &e);
    char *j = m ? ct_manifest_json(m) : NULL;
    ok(j && strstr(j, "\"strategy\":\"auto\"") && strstr(j, "\"steps\":[1,5,25,50,100]") &&
           strstr(j, "\"audit_every\":300") && strstr(j, "\"windows\":[]") &&
           strstr(j, "\"router\":{\"type\":\"endpoint\"}") && !strstr(j, "description"),
       "json fills the defaults: %s", j);
    free(j);
    ct_manifest_free(m);
    m = parse_q(round_trips[7], &e);
    j = m ? ct_manifest_json(m) : NULL;
    ok(j && strstr(j, "\"days\":\"mon,fri-sun\"") && strstr(j, "\"tz\":\"-05:30\"") &&
           strstr(j, "\"days\":\"mon,wed-fri,sun\"") && strstr(j, "\"days\":\"daily\"") &&
           strstr(j, "\"tz\":\"+14:00\"") && strstr(j, "\"days\":\"tue,thu\""),
       "windows written back in canonical form: %s", j);
    free(j);
    ct_manifest_free(m);

    /* windows */
    const char *office = "{'days':'mon-fri','from':'02:00','to':'05:00'}";
    ok(in_window(office, at(0, 3, 0)) == 1, "mon-fri 02-05: Monday 03:00 is inside");
    ok(in_window(office, at(0, 2, 0)) == 1, "Monday 02:00 is inside (from is inclusive)");
    ok(in_window(office, at(0, 5, 0)) == 0, "Monday 05:00 is outside (to is exclusive)");
    ok(in_window(office, at(0, 1, 59)) == 0, "Monday 01:59 is outside");
    ok(in_window(office, at(4, 4, 59)) == 1, "Friday 04:59 is inside");
    ok(in_window(office, at(5, 3, 0)) == 0, "Saturday 03:00 is outside");
    ok(in_window(office, at(6, 3, 0) + 7 * 86400000LL) == 0, "a Sunday a week on is outside");
    ok(in_window(office, at(7, 3, 0)) == 1, "next Monday is inside");
    const char *night = "{'days':'fri','from':'22:00','to':'02:00'}";
    ok(in_window(night, at(4, 23, 0)) == 1, "fri 22-02: Friday 23:00 is inside");
    ok(in_window(night, at(5, 1, 0)) == 1, "Saturday 01:00 is inside (Friday's window)");
    ok(in_window(night, at(5, 2, 0)) == 0, "Saturday 02:00 is outside");
    ok(in_window(night, at(4, 1, 0)) == 0, "Friday 01:00 is outside (Thursday has none)");
    ok(in_window(night, at(5, 23, 0)) == 0, "Saturday 23:00 is outside");
    const char *paris = "{'days':'mon','from':'09:00','to':'10:00','tz':'+02:00'}";
    ok(in_window(paris, at(0, 7, 30)) == 1, "mon 09-10 +02:00: 07:30 UTC is inside");
    ok(in_window(paris, at(0, 9, 30)) == 0, "09:30 UTC is outside");
    const char *east = "{'days':'mon','from':'01:00','to':'03:00','tz':'+05:00'}";
    ok(in_window(east, at(-1, 21, 0)) == 1, "+05:00: Sunday 21:00 UTC is Monday 02:00 there");
    ok(in_window(east, at(0, 21, 0)) == 0, "Monday 21:00 UTC is Tuesday there");
    const char *west = "{'days':'sun','from':'22:00','to':'23:00','tz':'-05:00'}";
    ok(in_window(west, at(0, 3, 30)) == 1, "-05:00: Monday 03:30 UTC is Sunday 22:30 there");
    ok(in_window(west, at(6, 3, 30)) == 0, "Sunday 03:30 UTC is Saturday there");
    const char *half = "{'days':'daily','from':'00:00','to':'00:30','tz':'-00:30'}";
    ok(in_window(half, at(2, 0, 45)) == 1 && in_window(half, at(2, 0, 15)) == 0,
       "-00:30: 00:45 UTC inside, 00:15 UTC outside");
    const char *old = "{'days':'wed','from':'22:00','to':'23:30'}";
    ok(in_window(old, -3600000) == 1 && in_window(old, -7 * 3600000) == 0,
       "before 1970: 1969-12-31 (a Wednesday) 23:00 inside, 17:00 outside");
    const char *two = "{'days':'sat','from':'10:00','to':'11:00'},"
                      "{'days':'sun','from':'10:00','to':'11:00'}";
    ok(in_window(two, at(6, 10, 30)) == 1 && in_window(two, at(5, 10, 30)) == 1 &&
           in_window(two, at(4, 10, 30)) == 0,
       "two windows: either one opens");
    ok(days_of("mon-fri") == 0x1f, "mon-fri");
    ok(days_of("sat,sun") == 0x60, "sat,sun");
    ok(days_of("mon,wed-fri") == 0x1d, "mon,wed-fri");
    ok(days_of("fri-mon") == 0x71, "fri-mon wraps");
    ok(days_of("sun-tue") == 0x43, "sun-tue wraps");
    ok(days_of("daily") == 0x7f, "daily");
    ok(days_of("Mon, Tue") == 0x03, "case and spaces after commas");

    /* classification */
    classify(side("postgresql", 16, "7300001", 1), side("postgresql", 16, "7300001", 1),
             CT_CLASS_SCHEMA_ONLY, CT_STRAT_DUAL_WRITE,
             "source and target are on the same server (postgresql 16, 7300001); only the "
             "schema changes");
    classify(side("postgresql", 16, "7300001", 1), side("postgresql", 16, "7300002", 0),
             CT_CLASS_DATA_MOVE, CT_STRAT_CDC, "cdc");
    classify(side("postgresql", 16, "7300001", 0), side("postgresql", 16, "7300002", 1),
             CT_CLASS_DATA_MOVE, CT_STRAT_DUAL_WRITE, "source wal_level is not logical");
    classify(side("postgresql", 13, "a", 1), side("postgresql", 16, "b", 1), CT_CLASS_REPLATFORM,
             CT_STRAT_CDC, "postgresql 13 to postgresql 16: another major version");
    classify(side("postgresql", 13, "a", 0), side("postgresql", 16, "b", 1), CT_CLASS_REPLATFORM,
             CT_STRAT_DUAL_WRITE, "wal_level is not logical");
    classify(side("sqlite", 3, "/data/app.db", 0), side("postgresql", 16, "b", 1),
             CT_CLASS_REPLATFORM, CT_STRAT_DUAL_WRITE, "sqlite 3 to postgresql 16: another engine");
    classify(side("sqlite", 3, "/data/a.db", 0), side("sqlite", 3, "/data/b.db", 0),
             CT_CLASS_DATA_MOVE, CT_STRAT_DUAL_WRITE, "postgresql on both sides");
    classify(side("sqlite", 3, "/data/a.db", 0), side("sqlite", 3, "/data/a.db", 0),
             CT_CLASS_SCHEMA_ONLY, CT_STRAT_DUAL_WRITE, "same server (sqlite 3, /data/a.db)");
    classify(side("postgresql", 16, "", 1), side("postgresql", 16, "", 1), CT_CLASS_DATA_MOVE,
             CT_STRAT_CDC, "on another server");
    classify(side("postgresql", 16, "x", 1), side("sqlite", 3, "x", 0), CT_CLASS_REPLATFORM,
             CT_STRAT_DUAL_WRITE, "another engine");
    {
        ct_side_facts s = side("postgresql", 16, "a", 1), d = side("postgresql", 16, "b", 1);
        memset(s.engine, 'p', sizeof s.engine); /* not terminated */
        s.server_id[0] = '\n';
        char small[24];
        ct_strategy st;
        ct_class c = ct_classify(&s, &d, &st, small, sizeof small);
        ok(c == CT_CLASS_REPLATFORM && strlen(small) == sizeof small - 1 && one_line(small),
           "unterminated facts and a short buffer: %s", small);
    }

    /* names */
    ct_phase p;
    ct_strategy s;
    ok(!strcmp(ct_phase_name(CT_PH_SHADOW_READ), "shadow_read") && !ct_phase_name(CT_PH_COUNT) &&
           !ct_phase_name((ct_phase)-1),
       "phase names");
    ok(!ct_phase_parse("cleanup", &p) && p == CT_PH_CLEANUP && ct_phase_parse("Cleanup", &p) &&
           ct_phase_parse(NULL, &p),
       "phase parse");
    ok(!strcmp(ct_strategy_name(CT_STRAT_AUTO), "auto") &&
           !strcmp(ct_strategy_name(CT_STRAT_BLUE_GREEN), "blue_green") &&
           !ct_strategy_name((ct_strategy)9),
       "strategy names");
    ok(!ct_strategy_parse("dual_write", &s) && s == CT_STRAT_DUAL_WRITE &&
           !ct_strategy_parse("auto", &s) && s == CT_STRAT_AUTO && ct_strategy_parse("x", &s),
       "strategy parse");
    ok(!strcmp(ct_class_name(CT_CLASS_SCHEMA_ONLY), "schema-only") &&
           !strcmp(ct_class_name(CT_CLASS_DATA_MOVE), "data-move") &&
           !strcmp(ct_class_name(CT_CLASS_REPLATFORM), "replatform") && !ct_class_name((ct_class)0),
       "class names");

    return done_testing();
}
