/* test_cluster.c - cluster files (wh_cluster_load / wh_cluster_save) and the probe of this machine
 * (wh_cluster_probe), through the public API only: a valid file, every class of error with the
 * JSON path in its message, the save -> load round trip, and a plan made on a probed cluster. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "whale.h"
#include "../common/runner.h"

static int has(const char *msg, const char *part) { return msg && strstr(msg, part) != NULL; }
#define SHOW(s) ((s) ? (const char *)(s) : "(null)")

static char dir[64];
static wh_ctx *ctx;
static void plan_tiny(wh_ctx *ctx, const wh_cluster *c, const char *what);

static const char *tmp_path(const char *name) {
  static char p[4][256];
  static int k;
  k = (k + 1) % 4;
  snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
  return p[k];
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  if (!f) {
    printf("cannot write %s\n", path);
    exit(1);
  }
  fputs(text, f);
  fclose(f);
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = calloc(1, (size_t)n + 1);
  if (s && fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = 0;
  fclose(f);
  return s;
}

static char *describe(const wh_cluster *c) {
  char *s = NULL;
  if (wh_cluster_describe(c, &s) != WH_OK) return NULL;
  return s;
}

/* ---- a valid file: catalogue kinds, overrides, a custom kind, comments */

static const char *valid_json =
    "/* a hand-written cluster: comments are accepted */\n"
    "{\n"
    "  \"links\": {\"intra_node\": {\"bandwidth_GBps\": 0, \"latency_us\": 5},\n"
    "            \"inter_node\": {\"bandwidth_Gbps\": 100, \"latency_us\": 30}},\n"
    "  \"nodes\": [\n"
    "    {\"devices\": [{\"kind\": \"V100-32GB\", \"count\": 8}]},\n"
    "    {\"devices\": [{\"kind\": \"custom-x\", \"count\": 2, \"flops_f32_TF\": 20, \"flops_bf16_TF\": 80,\n"
    "                    \"mem_bw_GBps\": 1000, \"mem_GiB\": 24, \"link_GBps\": 32, \"eff_flops\": 0.5,\n"
    "                    \"eff_bw\": 0.7},\n"
    "                   {\"kind\": \"a100-40gb\", \"mem_GiB\": 80}]}, // lower case: the catalogue's spelling\n"
    "    {\"node\": 5, \"devices\": [{\"kind\": \"T4\"}]}\n"
    "  ]\n"
    "}\n";

static void test_valid(const void *arg) {
  (void)arg;
  const char *p = tmp_path("valid.json");
  write_file(p, valid_json);
  wh_cluster *c = NULL;
  wh_status st = wh_cluster_load(ctx, p, &c);
  EXPECT(st == WH_OK && c, "load valid: %s: %s", wh_status_str(st), wh_last_error(ctx));
  if (!c) return;
  EXPECT(wh_cluster_size(c) == 12, "size %d, expected 12", wh_cluster_size(c));
  char *d = describe(c);
  EXPECT(has(d, "cluster: 12 devices"), "describe header: %s", SHOW(d));
  EXPECT(has(d, "intra-node per device, default 0.0 GB/s 5.0 us"), "intra link: %s", SHOW(d));
  EXPECT(has(d, "inter-node 12.5 GB/s 30.0 us"), "inter link (100 Gb/s = 12.5 GB/s): %s", SHOW(d));
  EXPECT(has(d, "device   7  node  0  V100-32GB") && !has(d, "device   8  node  0"), "8 V100 on node 0: %s", SHOW(d));
  EXPECT(has(d, "device   9  node  1  custom-x      20.0 TFLOP/s f32    80.0 bf16    1000 GB/s    24.0 GiB  "
                "link    32 GB/s  sustained 0.50 / 0.70"),
         "custom-x figures: %s", SHOW(d));
  EXPECT(has(d, "device  10  node  1  A100-40GB     19.5 TFLOP/s f32   312.0 bf16    1555 GB/s    80.0 GiB"),
         "A100 with overridden memory, catalogue spelling: %s", SHOW(d));
  EXPECT(has(d, "device  11  node  5  T4"), "explicit node number: %s", SHOW(d));
  EXPECT(has(d, "sustained 0.60 / 0.75"), "library default efficiencies for catalogue kinds: %s", SHOW(d));
  wh_free(d);
  plan_tiny(ctx, c, "the loaded cluster");
  wh_cluster_destroy(c);
}

/* ---- every class of error names the file, the JSON path and what is wrong */

static void test_errors(const void *arg) {
  (void)arg;
  struct {
    const char *json;
    const char *part[3]; /* substrings the message must hold */
  } cases[] = {
      /* not JSON: json-c's message with line and column */
      {"{\n  \"nodes\": [\n    {\"devices\": [}\n  ]\n}\n", {"not valid JSON", ":3:", "json-c"}},
      {"{\"nodes\": [", {"not valid JSON", "unexpected end of file", ":1:"}},
      {"{\"nodes\": []}\n x", {"not valid JSON", "unexpected data after the JSON value", ":2:"}},
      {"", {"not valid JSON", "empty file", NULL}},
      {"{\"nodes\": [{\"devices\": [{\"kind\": tru}]}]}", {"not valid JSON", "boolean expected", NULL}},
      /* wrong type */
      {"[1, 2]", {"(top level)", "wrong type", "found an array"}},
      {"{\"nodes\": {}}", {": nodes: wrong type", "expected an array", "found an object"}},
      {"{\"nodes\": [{\"devices\": 3}]}", {"nodes[0].devices: wrong type", "found a number", NULL}},
      {"{\"nodes\": [[]]}", {"nodes[0]: wrong type", "found an array", NULL}},
      {"{\"nodes\": [{\"devices\": [\"V100-32GB\"]}]}", {"nodes[0].devices[0]: wrong type", "found a string", NULL}},
      {"{\"nodes\": [{\"devices\": [{\"kind\": \"T4\", \"count\": \"8\"}]}]}",
       {"nodes[0].devices[0].count: wrong type", "expected an integer", "found a string"}},
      {"{\"nodes\": [{\"devices\": [{\"kind\": \"T4\", \"count\": 2.5}]}]}",
       {"nodes[0].devices[0].count: wrong type", "expected an integer", NULL}},
      {"{\"nodes\": [{\"devices\": [{\"kind\": 7}]}]}", {"nodes[0].devices[0].kind: wrong type", "found a number", NULL}},
      {"{\"nodes\": [{\"devices\": [{\"kind\": \"T4\", \"mem_GiB\": true}]}]}",
       {"nodes[0].devices[0].mem_GiB: wrong type", "found a boolean", NULL}},
      {"{\"links\": {\"inter_node\": {\"latency_us\": null}}, \"nodes\": []}",
       {"links.inter_node.latency_us: wrong type", "found null", NULL}},
      {"{\"links\": [], \"nodes\": []}", {": links: wrong type", NULL, NULL}},
      /* missing */
      {"{\"links\": {}}", {": nodes: missing", NULL, NULL}},
      {"{\"nodes\": [{}]}", {"nodes[0].devices: missing", NULL, NULL}},
      {"{\"nodes\": [{\"devices\": [{\"count\": 2}]}]}", {"nodes[0].devices[0].kind: missing", NULL, NULL}},
      {"{\"nodes\": [{\"devices\": [{\"kind\": \"T4\"}]},\n {\"devices\": [{\"kind\": \"custom-x\", \"count\": 2, "
       "\"flops_f32_TF\": 20, \"flops_bf16_TF\": 80, \"mem_bw_GBps\": 1000, \"link_GBps\": 32}]}]}",
       {"nodes[1].devices[0].mem_GiB: missing", "custom-x", "not in the catalogue"}},
      /* out of range */
      {"{\"nodes\": [{\"devices\": [{\"kind\": \"T4\", \"eff_flops\": 1.5}]}]}",
       {"nodes[0].devices[0].eff_flops: out of range", "1.5", NULL}},
      {"{\"nodes\": [{\"devices\": [{\"kind\": \"T4\", \"mem_GiB\": -1}]}]}",
       {"nodes[0].devices[0].mem_GiB: out of range", NULL, NULL}},
      {"{\"nodes\": [{\"devices\": [{\"kind\": \"T4\", \"flops_f32_TF\": 0}]}]}",
       {"nodes[0].devices[0].flops_f32_TF: out of range", "> 0", NULL}},
      {"{\"nodes\": [{\"devices\": [{\"kind\": \"T4\", \"count\": 0}]}]}",
       {"nodes[0].devices[0].count: out of range", NULL, NULL}},
      {"{\"nodes\": [{\"devices\": [{\"kind\": \"T4\", \"count\": 99999999999999999999}]}]}",
       {"nodes[0].devices[0].count: out of range", NULL, NULL}},
      {"{\"nodes\": [{\"devices\": [{\"kind\": \"T4\", \"mem_bw_GBps\": NaN}]}]}",
       {"nodes[0].devices[0].mem_bw_GBps: out of range", NULL, NULL}},
      {"{\"nodes\": [{\"devices\": [{\"kind\": \"T4\", \"link_GBps\": 1e999}]}]}",
       {"nodes[0].devices[0].link_GBps: out of range", NULL, NULL}},
      {"{\"nodes\": [{\"devices\": [{\"kind\": \"\"}]}]}", {"nodes[0].devices[0].kind: out of range", NULL, NULL}},
      {"{\"nodes\": [{\"devices\": [{\"kind\": \"a-kind-name-much-longer-than-31-chars\"}]}]}",
       {"nodes[0].devices[0].kind: out of range", "31", NULL}},
      {"{\"links\": {\"inter_node\": {\"bandwidth_Gbps\": 0}}, \"nodes\": []}",
       {"links.inter_node.bandwidth_Gbps: out of range", NULL, NULL}},
      {"{\"links\": {\"intra_node\": {\"latency_us\": -3}}, \"nodes\": []}",
       {"links.intra_node.latency_us: out of range", NULL, NULL}},
      {"{\"version\": 2, \"nodes\": []}", {": version: out of range", NULL, NULL}},
      {"{\"nodes\": [{\"node\": -1, \"devices\": []}]}", {"nodes[0].node: out of range", NULL, NULL}},
      {"{\"links\": {\"inter_node\": {\"bandwidth_Gbps\": 100, \"bandwidth_GBps\": 12.5}}, \"nodes\": []}",
       {"links.inter_node: both bandwidth_GBps and bandwidth_Gbps", NULL, NULL}},
      /* unknown keys: typos are caught */
      {"{\"nodes\": [{\"devices\": [{\"kind\": \"T4\", \"mem_GB\": 16}]}]}",
       {"nodes[0].devices[0].mem_GB: unknown key", "mem_GiB", NULL}},
      {"{\"node\": [], \"nodes\": []}", {": node: unknown key", "allowed here: version, links, nodes", NULL}},
      {"{\"links\": {\"inter_node\": {\"bandwidth\": 10}}, \"nodes\": []}",
       {"links.inter_node.bandwidth: unknown key", NULL, NULL}},
      {"{\"links\": {\"intra\": {}}, \"nodes\": []}", {"links.intra: unknown key", NULL, NULL}},
      {"{\"nodes\": [{\"device\": []}]}", {"nodes[0].device: unknown key", NULL, NULL}},
  };
  const char *p = tmp_path("bad.json");
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    write_file(p, cases[i].json);
    wh_cluster *c = (wh_cluster *)1;
    wh_status st = wh_cluster_load(ctx, p, &c);
    const char *m = wh_last_error(ctx);
    EXPECT(st == WH_ERR_CORRUPT && c == NULL, "case %zu: status %s, out %p", i, wh_status_str(st), (void *)c);
    EXPECT(has(m, p), "case %zu: message lacks the file name: %s", i, SHOW(m));
    for (int k = 0; k < 3; k++)
      if (cases[i].part[k]) EXPECT(has(m, cases[i].part[k]), "case %zu: message lacks '%s': %s", i, cases[i].part[k], SHOW(m));
    if (st == WH_OK) wh_cluster_destroy(c);
  }
  wh_cluster *c = (wh_cluster *)1;
  const char *missing = tmp_path("no-such-file.json");
  EXPECT(wh_cluster_load(ctx, missing, &c) == WH_ERR_IO && c == NULL, "missing file");
  EXPECT(has(wh_last_error(ctx), missing) && has(wh_last_error(ctx), "cannot open"), "message: %s",
         wh_last_error(ctx));
  EXPECT(wh_cluster_load(ctx, dir, &c) != WH_OK && c == NULL, "a directory is not a cluster file");
  EXPECT(wh_cluster_load(NULL, p, &c) == WH_ERR_INVALID_ARGUMENT, "NULL ctx");
  EXPECT(wh_cluster_load(ctx, NULL, &c) == WH_ERR_INVALID_ARGUMENT, "NULL path");
  EXPECT(wh_cluster_load(ctx, p, NULL) == WH_ERR_INVALID_ARGUMENT, "NULL out");
  EXPECT(wh_cluster_save(NULL, p) == WH_ERR_INVALID_ARGUMENT, "save NULL cluster");
}

/* ---- save -> load describes identically; saving again gives the same bytes */

static void round_trip(wh_ctx *ctx, const wh_cluster *c, const char *name) {
  char a[64], b[64];
  snprintf(a, sizeof a, "%s-1.json", name);
  snprintf(b, sizeof b, "%s-2.json", name);
  const char *pa = tmp_path(a), *pb = tmp_path(b);
  wh_status st = wh_cluster_save(c, pa);
  EXPECT(st == WH_OK, "%s: save: %s", name, wh_last_error(ctx));
  wh_cluster *r = NULL;
  st = wh_cluster_load(ctx, pa, &r);
  EXPECT(st == WH_OK && r, "%s: load of the saved file: %s", name, wh_last_error(ctx));
  if (!r) return;
  char *d1 = describe(c), *d2 = describe(r);
  EXPECT(d1 && d2 && strcmp(d1, d2) == 0, "%s: describes differ:\n%s\n---\n%s", name, SHOW(d1), SHOW(d2));
  EXPECT(wh_cluster_save(r, pb) == WH_OK, "%s: second save", name);
  char *t1 = read_file(pa), *t2 = read_file(pb);
  EXPECT(t1 && t2 && strcmp(t1, t2) == 0, "%s: saved files differ:\n%s\n---\n%s", name, SHOW(t1), SHOW(t2));
  wh_free(d1), wh_free(d2);
  free(t1), free(t2);
  wh_cluster_destroy(r);
}

static void test_round_trip(const void *arg) {
  (void)arg;
  wh_cluster *c = NULL;
  wh_cluster_create(ctx, &c);
  wh_cluster_set_links(c, 37.3e9, 1.7e-6, 3.3e9 / 7, 23.9e-6);
  wh_cluster_add(c, "V100-32GB", 0, 4);
  wh_device_desc d = WH_DEVICE_DESC_INIT;
  d.kind = "odd/one \"quoted\"";
  d.flops_f32 = 1.234567e13 / 3;
  d.flops_bf16 = 0; /* as f32 */
  d.mem_bw = 987.654321e9;
  d.mem_bytes = 12345678901.0;
  d.link_bw = 0;
  d.eff_flops = 0.123456789;
  d.eff_bw = 0; /* the default */
  wh_cluster_add_custom(c, &d, 2, 3);
  wh_cluster_add(c, "H100", 0, 1); /* node 0 again, after node 2: order and numbering kept */
  wh_device_desc h = WH_DEVICE_DESC_INIT;
  h.kind = "H100"; /* a catalogue kind with one figure changed */
  h.flops_f32 = 67e12;
  h.flops_bf16 = 989e12;
  h.mem_bw = 3350e9;
  h.mem_bytes = 94.0 * 1024 * 1024 * 1024;
  h.link_bw = 450e9;
  h.eff_flops = 0.6;
  h.eff_bw = 0.75;
  wh_cluster_add_custom(c, &h, 0, 2);
  EXPECT(wh_cluster_size(c) == 10, "size %d", wh_cluster_size(c));
  round_trip(ctx, c, "built");
  char *t = (wh_cluster_save(c, tmp_path("look.json")), read_file(tmp_path("look.json")));
  EXPECT(has(t, "\"kind\": \"V100-32GB\",\n") && has(t, "\"count\": 4\n"), "catalogue entry, no figures: %s", SHOW(t));
  EXPECT(has(t, "\"node\": 2") && has(t, "\"mem_GiB\": 94"), "node number and override written: %s", SHOW(t));
  EXPECT(!has(t, "\\/"), "slashes not escaped: %s", SHOW(t));
  free(t);
  wh_cluster_destroy(c);

  /* the valid file, loaded then saved */
  wh_cluster *v = NULL;
  if (wh_cluster_load(ctx, tmp_path("valid.json"), &v) == WH_OK) round_trip(ctx, v, "valid");
  else EXPECT(0, "valid.json: %s", wh_last_error(ctx));
  /* saving where it cannot be written */
  if (v) {
    EXPECT(wh_cluster_save(v, "/nonexistent-dir/x.json") == WH_ERR_IO, "unwritable path");
    EXPECT(has(wh_last_error(ctx), "/nonexistent-dir/x.json"), "message: %s", wh_last_error(ctx));
  }
  wh_cluster_destroy(v);

  /* figures with all 53 bits set, as measurements give: not every such double is x * 10^9 for
   * a decimal x, and the saved text must still read back to a file that saves the same */
  wh_cluster *r = NULL;
  wh_cluster_create(ctx, &r);
  uint64_t seed = 12345;
  for (int i = 0; i < 200; i++) {
    double f[7];
    for (int k = 0; k < 7; k++) {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      f[k] = 0.05 + 0.95 * (double)(seed >> 11) / 9007199254740992.0; /* (0.05, 1] */
    }
    wh_device_desc q = WH_DEVICE_DESC_INIT;
    q.kind = "noisy";
    q.flops_f32 = f[0] * 1e14;
    q.flops_bf16 = f[1] * 1e15;
    q.mem_bw = f[2] * 3e12;
    q.mem_bytes = f[3] * 1e11;
    q.link_bw = f[4] * 1e11;
    q.eff_flops = f[5];
    q.eff_bw = f[6];
    wh_cluster_add_custom(r, &q, i / 8, 1);
  }
  wh_cluster_set_links(r, 0.123456789012345e9, 1.23456789012345e-6, 9.87654321098765e9, 2.71828182845904e-5);
  round_trip(ctx, r, "noisy");
  wh_cluster_destroy(r);

  /* an empty cluster */
  wh_cluster *e = NULL;
  wh_cluster_create(ctx, &e);
  round_trip(ctx, e, "empty");
  wh_cluster_destroy(e);
}

/* ---- a plan for a tiny MLP (2 layers, AdamW) on cluster c */

static void plan_tiny(wh_ctx *ctx, const wh_cluster *c, const char *what) {
  wh_graph *g = NULL;
  wh_graph_create(ctx, &g);
  wh_value x = wh_input(g, "x", WH_F32, 2, (int64_t[]){WH_BATCH, 64});
  wh_value y = wh_input(g, "y", WH_I32, 1, (int64_t[]){WH_BATCH});
  wh_value w1 = wh_param(g, "w1", WH_F32, 2, (int64_t[]){64, 128}, WH_INIT(WH_INIT_XAVIER_UNIFORM, 0, 0, 1));
  wh_value b1 = wh_param(g, "b1", WH_F32, 1, (int64_t[]){128}, WH_INIT(WH_INIT_ZEROS, 0, 0, 0));
  wh_value w2 = wh_param(g, "w2", WH_F32, 2, (int64_t[]){128, 10}, WH_INIT(WH_INIT_XAVIER_UNIFORM, 0, 0, 2));
  wh_value b2 = wh_param(g, "b2", WH_F32, 1, (int64_t[]){10}, WH_INIT(WH_INIT_ZEROS, 0, 0, 0));
  wh_value h = wh_relu(g, wh_bias_add(g, wh_matmul(g, x, w1, 0, 0), b1, -1));
  wh_value logits = wh_bias_add(g, wh_matmul(g, h, w2, 0, 0), b2, -1);
  wh_value loss = wh_cross_entropy(g, logits, y);
  EXPECT(loss != WH_NONE, "model: %s", wh_graph_error(g));
  EXPECT(wh_backward(g, loss) == WH_OK, "backward: %s", wh_last_error(ctx));
  wh_adamw_options ao = WH_ADAMW_OPTIONS_INIT;
  EXPECT(wh_optimizer_adamw(g, &ao) == WH_OK, "adamw: %s", wh_last_error(ctx));
  wh_plan_options po = WH_PLAN_OPTIONS_INIT;
  po.global_batch = 32;
  wh_plan *plan = NULL;
  wh_status st = wh_plan_create(ctx, g, c, &po, &plan);
  EXPECT(st == WH_OK && plan, "plan on %s: %s: %s", what, wh_status_str(st), wh_last_error(ctx));
  if (plan) {
    double step = wh_plan_step_time(plan);
    printf("plan on %s: %d stage(s), step %.3g s predicted\n", what, wh_plan_num_stages(plan), step);
    EXPECT(step > 0 && step < 10, "step time %g s", step);
    int64_t shares[64] = {0};
    int n = wh_cluster_size(c) < 64 ? wh_cluster_size(c) : 64;
    int64_t sum = 0;
    EXPECT(wh_plan_shares(plan, shares, n) == WH_OK, "shares");
    for (int i = 0; i < n; i++) sum += shares[i];
    EXPECT(sum >= 1, "some device has a share");
    char *ex = NULL;
    EXPECT(wh_plan_explain(plan, &ex) == WH_OK && ex && ex[0], "explain");
    wh_free(ex);
  }
  wh_plan_destroy(plan);
  wh_graph_destroy(g);
}

/* ---- probing this machine, and planning on what it found */

static double json_figure(const char *text, const char *key) {
  char k[64];
  snprintf(k, sizeof k, "\"%s\"", key);
  const char *p = strstr(text ? text : "", k);
  if (!p) return -1;
  p = strchr(p, ':');
  return p ? strtod(p + 1, NULL) : -1;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void print_log(wh_log_level level, const char *msg, void *user) {
  (void)level, (void)user;
  printf("  log: %s\n", msg);
}

static void test_probe(const void *arg) {
  (void)arg;
  wh_ctx_options o = WH_CTX_OPTIONS_INIT;
  o.log_fn = print_log;
  o.log_level = WH_LOG_INFO;
  wh_ctx *ctx = NULL;
  if (wh_ctx_create(&ctx, &o) != WH_OK) {
    EXPECT(0, "context");
    return;
  }
  wh_cluster *c = NULL;
  double t0 = now_s();
  wh_status st = wh_cluster_probe(ctx, &c);
  double secs = now_s() - t0;
  EXPECT(st == WH_OK && c, "probe: %s: %s", wh_status_str(st), wh_last_error(ctx));
  if (!c) {
    wh_ctx_destroy(ctx);
    return;
  }
  printf("probe took %.2f s\n", secs);
  EXPECT(wh_cluster_size(c) >= 1, "probe found %d devices", wh_cluster_size(c));
  char *d = describe(c);
  printf("%s", d ? d : "");
  EXPECT(has(d, "device   0  node  0  CPU"), "the CPU is device 0: %s", SHOW(d));
  wh_free(d);
  /* the figures, at full precision, from the saved file */
  const char *p = tmp_path("probed.json");
  EXPECT(wh_cluster_save(c, p) == WH_OK, "save probed: %s", wh_last_error(ctx));
  char *t = read_file(p);
  double gflops = json_figure(t, "flops_f32_TF") * 1e3, gbps = json_figure(t, "mem_bw_GBps"),
         gib = json_figure(t, "mem_GiB");
  printf("CPU: %.1f GFLOP/s, %.1f GB/s, %.1f GiB\n", gflops, gbps, gib);
  /* under valgrind every instruction is emulated, some 50 times slower: only sane signs there */
  const char *pre = getenv("LD_PRELOAD");
  int emulated = pre && strstr(pre, "vgpreload");
  if (emulated) printf("under valgrind: the rate bounds are not checked\n");
  EXPECT(gflops >= (emulated ? 1e-6 : 1) && gflops <= 10000, "CPU GFLOP/s %g not in [1, 10000]", gflops);
  EXPECT(gbps >= (emulated ? 1e-6 : 0.5) && gbps <= 1000, "CPU memory GB/s %g not in [0.5, 1000]", gbps);
  EXPECT(gib > 0.1 && gib < 1e5, "CPU memory %g GiB", gib);
  EXPECT(json_figure(t, "eff_flops") == 1 && json_figure(t, "eff_bw") == 1, "measured: efficiencies 1: %s", SHOW(t));
  free(t);
  round_trip(ctx, c, "probed");

  plan_tiny(ctx, c, "the probed cluster");
  wh_cluster_destroy(c);
  EXPECT(wh_cluster_probe(ctx, NULL) == WH_ERR_INVALID_ARGUMENT, "probe NULL out");
  EXPECT(wh_cluster_probe(NULL, &c) == WH_ERR_INVALID_ARGUMENT && c == NULL, "probe NULL ctx");
  wh_ctx_destroy(ctx);
}

static int setup(int argc, char **argv) {
  (void)argc, (void)argv;
  snprintf(dir, sizeof dir, "/tmp/whale-cluster-XXXXXX");
  if (!mkdtemp(dir)) {
    printf("mkdtemp failed\n");
    return 1;
  }
  wh_ctx_options o = WH_CTX_OPTIONS_INIT;
  o.num_threads = 1;
  return wh_ctx_create(&ctx, &o) != WH_OK;
}

static void teardown(void) {
  wh_ctx_destroy(ctx);
  const char *files[] = {"valid.json", "bad.json", "look.json", "probed.json", "built-1.json", "built-2.json",
                         "valid-1.json", "valid-2.json", "empty-1.json", "empty-2.json", "probed-1.json",
                         "probed-2.json", "noisy-1.json", "noisy-2.json"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) unlink(tmp_path(files[i]));
  rmdir(dir);
}

static const wt_case cases[] = {
    {"valid", test_valid, NULL},
    {"errors", test_errors, NULL},
    {"round_trip", test_round_trip, NULL},
    {"probe", test_probe, NULL}, /* a context of its own, logging at info level */
};

int main(int argc, char **argv) {
  const wt_suite suite = {"cluster", setup, teardown, NULL, 0};
  return wt_main(&suite, cases, WT_COUNT(cases), argc, argv);
}
