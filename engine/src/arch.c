/* arch.c - EfficientNet and MixNet definitions, decoded from timm's block strings.
 *
 * The block-string grammar is timm's (efficientnet_builder.py): underscore-separated options
 *   ds|ir  block type          r<n>  repeats          k<a.b.c>  depthwise kernel(s)
 *   s<n>   stride              e<f>  expansion ratio  c<n>      output channels
 *   se<f>  squeeze-excite ratio (of the block input channels)
 *   a<1.1> expansion conv split into groups          p<1.1>    projection conv split
 *   nre/nsw activation override (ReLU / Swish)       noskip    no residual
 * Stages are separated by ';', block strings inside a stage by ','.
 */
#include "arch.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ==== architecture table ======================================================================= */

static const char efficientnet_stages[] =
    "ds_r1_k3_s1_e1_c16_se0.25;"
    "ir_r2_k3_s2_e6_c24_se0.25;"
    "ir_r2_k5_s2_e6_c40_se0.25;"
    "ir_r3_k3_s2_e6_c80_se0.25;"
    "ir_r3_k5_s1_e6_c112_se0.25;"
    "ir_r4_k5_s2_e6_c192_se0.25;"
    "ir_r1_k3_s1_e6_c320_se0.25";

static const char mixnet_s_stages[] =
    "ds_r1_k3_s1_e1_c16;"
    "ir_r1_k3_a1.1_p1.1_s2_e6_c24,ir_r1_k3_a1.1_p1.1_s1_e3_c24;"
    "ir_r1_k3.5.7_s2_e6_c40_se0.5_nsw,ir_r3_k3.5_a1.1_p1.1_s1_e6_c40_se0.5_nsw;"
    "ir_r1_k3.5.7_p1.1_s2_e6_c80_se0.25_nsw,ir_r2_k3.5_p1.1_s1_e6_c80_se0.25_nsw;"
    "ir_r1_k3.5.7_a1.1_p1.1_s1_e6_c120_se0.5_nsw,ir_r2_k3.5.7.9_a1.1_p1.1_s1_e3_c120_se0.5_nsw;"
    "ir_r1_k3.5.7.9.11_s2_e6_c200_se0.5_nsw,ir_r2_k3.5.7.9_p1.1_s1_e6_c200_se0.5_nsw";

static const char mixnet_m_stages[] =
    "ds_r1_k3_s1_e1_c24;"
    "ir_r1_k3.5.7_a1.1_p1.1_s2_e6_c32,ir_r1_k3_a1.1_p1.1_s1_e3_c32;"
    "ir_r1_k3.5.7.9_s2_e6_c40_se0.5_nsw,ir_r3_k3.5_a1.1_p1.1_s1_e6_c40_se0.5_nsw;"
    "ir_r1_k3.5.7_s2_e6_c80_se0.25_nsw,ir_r3_k3.5.7.9_a1.1_p1.1_s1_e6_c80_se0.25_nsw;"
    "ir_r1_k3_s1_e6_c120_se0.5_nsw,ir_r3_k3.5.7.9_a1.1_p1.1_s1_e3_c120_se0.5_nsw;"
    "ir_r1_k3.5.7.9_s2_e6_c200_se0.5_nsw,ir_r3_k3.5.7.9_p1.1_s1_e6_c200_se0.5_nsw";

typedef struct {
    const char *name;
    const char *stages;
    double ch_mult, depth_mult;
    int stem;            /* before the channel multiplier */
    int head;            /* head conv width */
    int head_scaled;     /* EfficientNet scales the head width, MixNet keeps 1536 */
    lsq_act act;         /* default activation of stem, blocks and head */
    int tf;
    int input_size;
    float crop_pct;
    lsq_interp interp;
} arch_entry;

#define EFFNET(nm, cm, dm, size, crop, tf)                                                        \
    { nm, efficientnet_stages, cm, dm, 32, 1280, 1, LSQ_ACT_SWISH, tf, size, crop, LSQ_INTERP_BICUBIC }
#define MIXNET(nm, st, cm, stem, tf)                                                              \
    { nm, st, cm, 1.0, stem, 1536, 0, LSQ_ACT_RELU, tf, 224, 0.875f, LSQ_INTERP_BICUBIC }

/* input size / crop_pct: timm's default evaluation settings (models/lsqnet/nets.py agrees) */
static const arch_entry arch_table[] = {
    EFFNET("efficientnet_b0", 1.0, 1.0, 224, 0.875f, 0),
    EFFNET("efficientnet_b1", 1.0, 1.1, 240, 0.875f, 0),
    EFFNET("efficientnet_b2", 1.1, 1.2, 256, 0.875f, 0),
    EFFNET("efficientnet_b3", 1.2, 1.4, 288, 0.875f, 0),
    MIXNET("mixnet_s", mixnet_s_stages, 1.0, 16, 0),
    MIXNET("mixnet_m", mixnet_m_stages, 1.0, 24, 0),
    MIXNET("mixnet_l", mixnet_m_stages, 1.3, 24, 0),
    EFFNET("tf_efficientnet_b0", 1.0, 1.0, 224, 0.875f, 1),
    EFFNET("tf_efficientnet_b1", 1.0, 1.1, 240, 0.882f, 1),
    EFFNET("tf_efficientnet_b2", 1.1, 1.2, 260, 0.890f, 1),
    EFFNET("tf_efficientnet_b3", 1.2, 1.4, 300, 0.904f, 1),
    MIXNET("tf_mixnet_s", mixnet_s_stages, 1.0, 16, 1),
    MIXNET("tf_mixnet_m", mixnet_m_stages, 1.0, 24, 1),
    MIXNET("tf_mixnet_l", mixnet_m_stages, 1.3, 24, 1),
};

const char *const *lsq_arch_names(void)
{
    static const char *names[LSQ_ARRAY_LEN(arch_table) + 1];
    for (size_t i = 0; i < LSQ_ARRAY_LEN(arch_table); i++) names[i] = arch_table[i].name;
    return names;
}

/* ==== timm's rounding rules ==================================================================== */

/* timm make_divisible(v, 8, round_limit=0.9) */
static int make_divisible(double v)
{
    int d = 8;
    int n = (int)(v + d / 2.0) / d * d;
    if (n < d) n = d;
    if (n < 0.9 * v) n += d;
    return n;
}

static int round_channels(double ch, double mult) { return mult == 1.0 ? (int)ch : make_divisible(ch * mult); }

/* Python's round(): half to even. */
static int py_round(double v)
{
    double r = nearbyint(v);
    return (int)r;
}

/* timm _split_channels: equal splits, the remainder to the first. */
static void split_channels(int total, int n, int *out)
{
    int sum = 0;
    for (int i = 0; i < n; i++) sum += out[i] = total / n;
    out[0] += total - sum;
}

/* ==== block-string decoding ==================================================================== */

typedef struct {
    lsq_block_type type;
    int repeats, stride, out_chs, noskip;
    int nk, k[LSQ_MAX_PARTS];   /* depthwise kernels */
    int n_exp_groups, n_pw_groups;
    double exp_ratio, se_ratio;
    lsq_act act;                /* LSQ_ACT_NONE = the network's default */
} block_args;

static int parse_int_list(const char *s, int *out, int max)
{
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || n >= max || v <= 0 || v > 64) return -1;
        out[n++] = (int)v;
        s = end;
        if (*s == '.') s++;
        else if (*s) return -1;
    }
    return n;
}

static lsq_status decode_block(const char *str, block_args *b, lsq_error *err)
{
    char buf[96];
    if (strlen(str) >= sizeof buf) return lsq_fail(err, LSQ_ERR_ARCH, "block string too long: %s", str);
    strcpy(buf, str);
    memset(b, 0, sizeof *b);
    b->repeats = 1;
    b->stride = 1;
    b->exp_ratio = 1.0;
    b->nk = 1;
    b->k[0] = 3;
    b->n_exp_groups = b->n_pw_groups = 1;
    char *save = NULL;
    char *tok = strtok_r(buf, "_", &save);
    if (!tok) return lsq_fail(err, LSQ_ERR_ARCH, "empty block string");
    if (!strcmp(tok, "ds")) b->type = LSQ_BLOCK_DS;
    else if (!strcmp(tok, "ir")) b->type = LSQ_BLOCK_IR;
    else return lsq_fail(err, LSQ_ERR_ARCH, "block '%s': unknown type '%s'", str, tok);
    int tmp[LSQ_MAX_PARTS];
    while ((tok = strtok_r(NULL, "_", &save))) {
        int bad = 0;
        if (!strcmp(tok, "noskip")) b->noskip = 1;
        else if (!strcmp(tok, "nre")) b->act = LSQ_ACT_RELU;
        else if (!strcmp(tok, "nsw")) b->act = LSQ_ACT_SWISH;
        else if (!strncmp(tok, "se", 2)) b->se_ratio = atof(tok + 2);
        else if (tok[0] == 'r') bad = (b->repeats = atoi(tok + 1)) <= 0;
        else if (tok[0] == 's') bad = (b->stride = atoi(tok + 1)) <= 0 || b->stride > 2;
        else if (tok[0] == 'e') bad = (b->exp_ratio = atof(tok + 1)) <= 0;
        else if (tok[0] == 'c') bad = (b->out_chs = atoi(tok + 1)) <= 0;
        else if (tok[0] == 'k') bad = (b->nk = parse_int_list(tok + 1, b->k, LSQ_MAX_PARTS)) <= 0;
        else if (tok[0] == 'a') bad = (b->n_exp_groups = parse_int_list(tok + 1, tmp, LSQ_MAX_PARTS)) <= 0;
        else if (tok[0] == 'p') bad = (b->n_pw_groups = parse_int_list(tok + 1, tmp, LSQ_MAX_PARTS)) <= 0;
        else bad = 1;
        if (bad) return lsq_fail(err, LSQ_ERR_ARCH, "block '%s': bad option '%s'", str, tok);
    }
    if (!b->out_chs) return lsq_fail(err, LSQ_ERR_ARCH, "block '%s': no output channels", str);
    return LSQ_OK;
}

/* ==== building convs =========================================================================== */

static void conv_init(lsq_conv_def *c, const char *name, const char *bn, int cin, int cout, int stride,
                      int depthwise, int ngroups, const int *ks, lsq_act act)
{
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->bn, sizeof c->bn, "%s", bn ? bn : "");
    c->cin = cin;
    c->cout = cout;
    c->stride = stride;
    c->depthwise = depthwise;
    c->act = act;
    c->nparts = ngroups;
    c->mixed = ngroups > 1;
    int in_split[LSQ_MAX_PARTS], out_split[LSQ_MAX_PARTS];
    split_channels(cin, ngroups, in_split);
    split_channels(cout, ngroups, out_split);
    int ioff = 0, ooff = 0;
    for (int i = 0; i < ngroups; i++) {
        c->part[i].k = ks ? ks[i] : 1;
        c->part[i].cin = in_split[i];
        c->part[i].cout = out_split[i];
        c->part[i].in_off = ioff;
        c->part[i].out_off = ooff;
        ioff += in_split[i];
        ooff += out_split[i];
    }
}

static void conv_single(lsq_conv_def *c, const char *name, const char *bn, int cin, int cout, int k, int stride,
                        lsq_act act)
{
    conv_init(c, name, bn, cin, cout, stride, 0, 1, &k, act);
}

lsq_status arch_build(const char *arch, int num_classes, lsq_net_def *out, lsq_error *err)
{
    memset(out, 0, sizeof *out);
    const arch_entry *e = NULL;
    for (size_t i = 0; i < LSQ_ARRAY_LEN(arch_table); i++)
        if (arch && !strcmp(arch_table[i].name, arch)) e = &arch_table[i];
    if (!e) {
        char known[512] = "";
        for (size_t i = 0; i < LSQ_ARRAY_LEN(arch_table); i++) {
            strncat(known, arch_table[i].name, sizeof known - strlen(known) - 3);
            if (i + 1 < LSQ_ARRAY_LEN(arch_table)) strcat(known, ", ");
        }
        return lsq_fail(err, LSQ_ERR_ARCH, "unknown architecture '%s' (known: %s)", arch ? arch : "(null)", known);
    }
    if (num_classes <= 0) num_classes = 1000;
    snprintf(out->arch, sizeof out->arch, "%s", e->name);
    out->tf_same = e->tf;
    out->bn_eps = e->tf ? 1e-3f : 1e-5f;
    out->num_classes = num_classes;

    /* Decode all stages first: repeats are scaled per stage (timm's 'ceil' depth scaling). */
    block_args args[64];
    int stage_of[64], nargs = 0, total_blocks = 0;
    char stages[1024];
    snprintf(stages, sizeof stages, "%s", e->stages);
    char *ssave = NULL;
    int stage = 0;
    for (char *st = strtok_r(stages, ";", &ssave); st; st = strtok_r(NULL, ";", &ssave), stage++) {
        int first = nargs, num_repeat = 0;
        char *bsave = NULL;
        for (char *bs = strtok_r(st, ",", &bsave); bs; bs = strtok_r(NULL, ",", &bsave)) {
            if (nargs >= (int)LSQ_ARRAY_LEN(args)) return lsq_fail(err, LSQ_ERR_ARCH, "too many block strings");
            lsq_status s = decode_block(bs, &args[nargs], err);
            if (s) return s;
            stage_of[nargs] = stage;
            num_repeat += args[nargs].repeats;
            nargs++;
        }
        /* timm _scale_stage_depth: distribute ceil(total * mult) over the strings, in reverse. */
        int scaled = (int)ceil(num_repeat * e->depth_mult);
        for (int i = nargs - 1; i >= first; i--) {
            int r = args[i].repeats;
            int rs = LSQ_MAX(1, py_round((double)r / num_repeat * scaled));
            num_repeat -= r;
            scaled -= rs;
            args[i].repeats = rs;
        }
    }
    for (int i = 0; i < nargs; i++) total_blocks += args[i].repeats;
    out->blocks = calloc((size_t)total_blocks, sizeof *out->blocks);
    if (!out->blocks) return lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");

    int stem = round_channels(e->stem, e->ch_mult);
    int three = 3;
    conv_init(&out->stem, "conv_stem", "bn1", 3, stem, 2, 0, 1, &three, e->act);

    int in_chs = stem, nb = 0, prev_stage = -1, idx = 0;
    char name[LSQ_NAME_LEN], bn[LSQ_NAME_LEN];
    for (int a = 0; a < nargs; a++) {
        const block_args *ba = &args[a];
        if (stage_of[a] != prev_stage) {
            prev_stage = stage_of[a];
            idx = 0;
        }
        lsq_act act = ba->act ? ba->act : e->act;
        int out_chs = round_channels(ba->out_chs, e->ch_mult);
        for (int r = 0; r < ba->repeats; r++, idx++) {
            lsq_block_def *b = &out->blocks[nb++];
            int stride = r == 0 ? ba->stride : 1;
            char prefix[32];
            snprintf(prefix, sizeof prefix, "blocks.%d.%d", stage_of[a], idx);
            b->type = ba->type;
            b->skip = stride == 1 && in_chs == out_chs && !ba->noskip;
            int mid = in_chs;
            int bn_i = 1;
            if (ba->type == LSQ_BLOCK_IR) {
                mid = make_divisible(in_chs * ba->exp_ratio);
                b->has_expand = 1;
                int ones[LSQ_MAX_PARTS] = {1, 1, 1, 1, 1, 1, 1, 1};
                snprintf(name, sizeof name, "%s.conv_pw", prefix);
                snprintf(bn, sizeof bn, "%s.bn%d", prefix, bn_i++);
                conv_init(&b->expand, name, bn, in_chs, mid, 1, 0, ba->n_exp_groups, ones, act);
            }
            snprintf(name, sizeof name, "%s.conv_dw", prefix);
            snprintf(bn, sizeof bn, "%s.bn%d", prefix, bn_i++);
            conv_init(&b->dw, name, bn, mid, mid, stride, 1, ba->nk, ba->k, act);
            if (ba->se_ratio > 0) {
                /* timm: rd = round(mid * se_ratio / exp_ratio), i.e. relative to the block input */
                double ratio = ba->type == LSQ_BLOCK_IR ? ba->se_ratio / ba->exp_ratio : ba->se_ratio;
                int rd = py_round(mid * ratio);
                b->has_se = 1;
                snprintf(name, sizeof name, "%s.se.conv_reduce", prefix);
                conv_single(&b->se_reduce, name, NULL, mid, rd, 1, 1, act);
                b->se_reduce.has_bias = 1;
                snprintf(name, sizeof name, "%s.se.conv_expand", prefix);
                conv_single(&b->se_expand, name, NULL, rd, mid, 1, 1, LSQ_ACT_SIGMOID);
                b->se_expand.has_bias = 1;
            }
            int ones[LSQ_MAX_PARTS] = {1, 1, 1, 1, 1, 1, 1, 1};
            snprintf(name, sizeof name, "%s.%s", prefix, ba->type == LSQ_BLOCK_IR ? "conv_pwl" : "conv_pw");
            snprintf(bn, sizeof bn, "%s.bn%d", prefix, bn_i++);
            conv_init(&b->project, name, bn, mid, out_chs, 1, 0, ba->n_pw_groups, ones, LSQ_ACT_NONE);
            in_chs = out_chs;
        }
    }
    out->nblocks = nb;
    out->num_features = e->head_scaled ? round_channels(e->head, e->ch_mult) : e->head;
    conv_single(&out->head, "conv_head", "bn2", in_chs, out->num_features, 1, 1, e->act);
    conv_single(&out->classifier, "classifier", NULL, out->num_features, num_classes, 1, 1, LSQ_ACT_NONE);
    out->classifier.linear = 1;
    out->classifier.has_bias = 1;

    lsq_preprocess *p = &out->preprocess;
    p->input_size = e->input_size;
    p->crop_pct = e->crop_pct;
    p->interp = e->interp;
    /* timm's default_cfg for these weights: ImageNet mean/std, bicubic (tf_ ports included) */
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    memcpy(p->mean, mean, sizeof mean);
    memcpy(p->std, std, sizeof std);
    return LSQ_OK;
}

void arch_free(lsq_net_def *def)
{
    free(def->blocks);
    def->blocks = NULL;
}

lsq_status arch_foreach_conv(lsq_net_def *def, arch_conv_fn fn, void *ctx)
{
    lsq_status s;
#define VISIT(c)                                                                                  \
    if ((s = fn(ctx, (c)))) return s
    VISIT(&def->stem);
    for (int i = 0; i < def->nblocks; i++) {
        lsq_block_def *b = &def->blocks[i];
        if (b->has_expand) VISIT(&b->expand);
        VISIT(&b->dw);
        if (b->has_se) {
            VISIT(&b->se_reduce);
            VISIT(&b->se_expand);
        }
        VISIT(&b->project);
    }
    VISIT(&def->head);
    VISIT(&def->classifier);
#undef VISIT
    return LSQ_OK;
}

void arch_conv_geometry(int tf_same, int in, int k, int stride, int *out, int *pad_before)
{
    if (tf_same) {
        int o = (in + stride - 1) / stride;
        int total = (o - 1) * stride + k - in;
        if (total < 0) total = 0;
        *out = o;
        *pad_before = total / 2;
    } else {
        int pad = ((stride - 1) + (k - 1)) / 2;
        *out = (in + 2 * pad - k) / stride + 1;
        *pad_before = pad;
    }
}
