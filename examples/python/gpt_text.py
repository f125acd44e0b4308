#!/usr/bin/python3
"""gpt_text.py - train a byte-level GPT on the fortune-cookie collection of Debian's `fortunes`
package, report train and validation loss against the unigram baseline and sample text at the end:
the Python twin of examples/gpt_text.c, option for option, step for step (same corpus order,
generator, graph, optimizer, plan and sampling), so both give the same losses.

    PYTHONPATH=build/python /usr/bin/python3 examples/python/gpt_text.py [--steps N] ...
    mpirun -np 2 /usr/bin/python3 examples/python/gpt_text.py --steps 200

Options: --layers --heads --width --context --batch --steps --lr --data --eval-every --sample
--recompute 0|1 --cluster FILE --stages N --micro N --schedule gpipe|1f1b --tp N --rebalance 0|1
--loss-log FILE --checkpoint DIR --every N --stop-at N (as gpt_text.c's; with --rebalance 0 both give the same
losses, number for number, and each resumes from the other's checkpoints).

Under mpirun the ranks train together: libwhale plans the step on a cluster of the ranks (from
--cluster FILE, or this machine probed by rank 0 and calibrated on this model), prints the plan,
and every rank runs its part. With mpi4py installed the communicator is mpi4py's COMM_WORLD (the
host owns MPI); without it libwhale initialises MPI itself.
"""
import math
import os
import struct
import sys
import time

import numpy as np

import whale
from gpt_model import build_gpt

VOCAB = 256
MASK = (1 << 64) - 1


class Config:
    layers, heads, width, context, batch, steps, eval_every, sample, recompute = 4, 4, 128, 64, 16, 600, 100, 300, 0
    stages, micro, schedule, tp, rebalance, every, stop_at = 1, 0, "1f1b", 1, 1, 0, 0
    lr = 3e-3
    data, cluster, loss_log, checkpoint = "/usr/share/games/fortunes", None, None, None


INT_OPTS = {"--layers": "layers", "--heads": "heads", "--width": "width", "--context": "context",
            "--batch": "batch", "--steps": "steps", "--eval-every": "eval_every", "--sample": "sample",
            "--recompute": "recompute", "--stages": "stages", "--micro": "micro", "--tp": "tp",
            "--rebalance": "rebalance", "--every": "every", "--stop-at": "stop_at"}
STR_OPTS = {"--data": "data", "--cluster": "cluster", "--loss-log": "loss_log", "--checkpoint": "checkpoint"}


class Rng:
    """gpt_text.c's xorshift64."""

    def __init__(self, state=0x9E3779B97F4A7C15):
        self.state = state

    def next(self):
        s = self.state
        s ^= (s << 13) & MASK
        s ^= s >> 7
        s ^= (s << 17) & MASK
        self.state = s
        return s


rng = Rng()
rank0 = True


def say(*args, **kw):
    if rank0:
        print(*args, **kw)


def load_corpus(d):
    """The corpus files (not the .dat indexes or .u8 links) concatenated in name order."""
    # the first 512 in directory order, then sorted by their bytes: what readdir and qsort give C
    names = [n for n in os.listdir(d) if not (n.startswith(".") or (len(n) > 4 and (n.endswith(".dat") or n.endswith(".u8"))))]
    names = sorted(names[:512], key=os.fsencode)
    parts = []
    for n in names:
        try:
            with open(os.path.join(d, n), "rb") as f:
                parts.append(f.read())
        except OSError:
            continue
    return np.frombuffer(b"".join(parts), np.uint8)


def fill_batch(text, b, t, tok, tgt):
    n = len(text) - t - 1
    for i in range(b):
        off = rng.next() % n
        tok[i] = text[off:off + t]
        tgt[i] = text[off + 1:off + t + 1]


def median_step(ctx, g, m, c, ranks, fig, text):
    """gpt_text.c's calibrate(): the cost model's prediction of one rank's step on the probed
    figures over the measured median of a throwaway session's steps."""
    lb = c.batch // ranks if c.batch // ranks > 0 else 1
    n = lb * c.context
    tok = np.ascontiguousarray(text[:n].astype(np.int32).reshape(lb, c.context))
    tgt = np.ascontiguousarray(text[1:n + 1].astype(np.int32).reshape(lb, c.context))
    s = whale.Session(g, batch=lb, recompute=bool(c.recompute))
    s.feed(m.tokens, tok)
    s.feed(m.targets, tgt)
    t = []
    for k in range(9):
        t0 = time.monotonic()
        s.step()
        if k >= 2:
            t.append(time.monotonic() - t0)
    s.close()
    t.sort()
    one = whale.Cluster(ctx).add_custom(whale.DeviceDesc("CPU-rank", fig[0], fig[0], fig[1], fig[2], 0, 1.0, 1.0))
    p = whale.Plan.pinned(g, one, lb)
    frac = p.step_time / t[3]
    p.close()
    one.close()
    return 0.02 if frac < 0.02 else 1.0 if frac > 1.0 else frac


def eval_loss(s, m, text, batch, t, batches, tok, tgt):
    saved = rng.state
    rng.state = 0xFEEDFACECAFEBEEF  # the same validation windows every time
    total = 0.0
    for _ in range(batches):
        fill_batch(text, batch, t, tok, tgt)
        s.feed(m.tokens, tok)
        s.feed(m.targets, tgt)
        s.run(whale.EVAL)
        total += float(s.fetch(m.loss))
    rng.state = saved
    return float(np.float32(total / batches))


def parse(argv):
    c = Config()
    i = 1
    while i + 1 < len(argv):
        k, v = argv[i], argv[i + 1]
        if k in INT_OPTS:
            setattr(c, INT_OPTS[k], int(v))
        elif k in STR_OPTS:
            setattr(c, STR_OPTS[k], v)
        elif k == "--lr":
            c.lr = float(np.float32(float(v)))
        elif k == "--schedule" and v in ("gpipe", "1f1b"):
            c.schedule = v
        else:
            print("unknown option %s" % k, file=sys.stderr)
            sys.exit(2)
        i += 2
    return c


def main(argv):
    global rank0
    c = parse(argv)
    try:
        text = load_corpus(c.data)
    except OSError:
        text = np.zeros(0, np.uint8)
    if len(text) < 10000:
        print("cannot read the text corpus in %s (Debian package 'fortunes')" % c.data, file=sys.stderr)
        return 1
    nval = len(text) // 10
    ntrain = len(text) - nval
    train, val = text[:ntrain], text[ntrain:]
    # unigram baseline: cross-entropy on the validation bytes of the training byte frequencies
    freq = np.bincount(train, minlength=VOCAB).astype(np.float64)
    h_unigram = float(-np.sum(np.log((freq[val] + 1) / float(ntrain + VOCAB))) / nval)

    # ranks on one machine share its cores
    li = whale.launch_detect()
    dist = li.size > 1
    cores = os.sysconf("SC_NPROCESSORS_ONLN")
    ctx = whale.Context(threads=(cores // li.local_size if cores // li.local_size > 0 else 1) if dist else 0)
    comm = None
    if dist:
        try:
            from mpi4py import MPI  # the host owns MPI: libwhale works on a duplicate of COMM_WORLD
            comm = whale.Comm(ctx, mpi_comm=MPI.COMM_WORLD)
        except ImportError:
            comm = whale.Comm(ctx)  # libwhale initialises (and finalises) MPI itself
        rank0 = comm.rank == 0
    say("libwhale %s [%s], %d rank%s x %d threads" % (whale.version(), whale.build_info(), comm.size if dist else 1,
                                                        "s" if dist else "", ctx.threads))
    say("corpus: %s, %d bytes (%d train, %d validation); unigram baseline %.3f nats/byte"
        % (c.data, len(text), ntrain, nval, h_unigram))

    # GPT-2 shape (gpt_model.py, as examples/models/gpt.h): each block a natural pipeline cut and an
    # activation checkpointing scope
    g = whale.Graph(ctx)
    m = build_gpt(g, vocab=VOCAB, context=c.context, width=c.width, layers=c.layers, heads=c.heads, names="long",
                  pos_std=0.02, scaled_proj=True, stage_per_block=True, recompute_per_block=True)
    m.logits.name = "logits"
    m.loss.name = "loss"
    g.keep(m.logits)
    g.backward(m.loss)
    lr = np.float32(c.lr)
    g.optimizer(whale.AdamW(lr=whale.WarmupCosine(float(lr), c.steps // 20 + 1, c.steps, float(lr / np.float32(10))),
                            betas=(0.9, 0.95), weight_decay=0.1, clip_norm=1.0))

    plan = cl = None
    if dist:
        if c.cluster:
            cl = whale.Cluster.load(c.cluster, ctx)
        else:
            # rank 0 measures what one rank gets, and every rank builds the same cluster
            fig = np.array([0, 0, 0, 1], np.float64)
            if rank0:
                probe = whale.Cluster.probe(ctx)
                say("probed: %s" % probe.describe(), end="")
                cpu = probe.device(0)
                fig[0], fig[1], fig[2] = cpu.flops_f32 * cpu.eff_flops, cpu.mem_bw * cpu.eff_bw, cpu.mem_bytes
                probe.close()
                fig[3] = median_step(ctx, g, m, c, comm.size, fig, train)
                say("calibration: one rank's step of this model reaches %.2f of the probed rates" % fig[3])
            comm.broadcast(fig, 0)
            # more ranks than cores: the probe ran on a whole core, each rank gets a share of one
            share = cores / li.local_size if li.local_size > cores else 1.0
            d = whale.DeviceDesc("CPU-rank", flops_f32=fig[0] * share, flops_bf16=fig[0] * share, mem_bw=fig[1] * share,
                                 mem_bytes=fig[2] / li.local_size, link_bw=5e9, eff_flops=fig[3], eff_bw=fig[3])
            cl = whale.Cluster(ctx).add_custom(d, 0, comm.size).set_links(5e9, 5e-6, 5e9, 5e-6)
        if c.stages > 1 or c.tp > 1:
            plan = whale.Plan.pinned(g, cl, c.batch, stages=max(c.stages, 1), tp=max(c.tp, 1),
                                     micro_batches=c.micro if c.micro > 0 else 2 * c.stages if c.stages > 1 else 1,
                                     schedule=c.schedule)
        else:
            plan = whale.Plan(g, cl, c.batch, stages=c.stages, micro_batches=c.micro)
        say(plan.explain(), end="")

    # plan memory both ways to show what recomputation saves; train with the chosen one
    s = whale.Session(g, batch=c.batch, recompute=not c.recompute, plan=plan, comm=comm, rebalance=bool(c.rebalance))
    other = s.memory()
    s.close()
    s = whale.Session(g, batch=c.batch, recompute=bool(c.recompute), plan=plan, comm=comm, rebalance=bool(c.rebalance))
    ms = s.memory()
    say("model: %d layers, %d heads, width %d, context %d, %.2fM parameters; batch %d, %d steps"
        % (c.layers, c.heads, c.width, c.context, m.params / 1e6, c.batch, c.steps))
    say("memory plan%s: arena %.1f MB for intermediates of %.1f MB total (%d ops in place); recompute %s: "
        "%.1f MB, %s: %.1f MB" % (" (rank 0)" if dist else "", ms.arena_bytes / 1e6, ms.intermediate_bytes / 1e6,
                                  ms.inplace_ops, "on" if c.recompute else "off", ms.arena_bytes / 1e6,
                                  "off" if c.recompute else "on", other.arena_bytes / 1e6))

    # resume: the state the last complete checkpoint holds, whatever layout saved it
    first = 1
    if c.every <= 0:
        c.every = c.eval_every
    if c.checkpoint:
        info = whale.checkpoint_find(c.checkpoint, ctx)
        if info is not None:
            cursor = s.checkpoint_load(c.checkpoint, 8)
            if len(cursor) != 8:
                print("%s: the checkpoint's metadata is %d bytes, not this program's sampler position"
                      % (c.checkpoint, len(cursor)), file=sys.stderr)
                return 1
            rng.state = struct.unpack("=Q", cursor)[0]
            first = s.steps + 1
            say("resumed from %s/%s at step %d (saved by %d rank%s, %s); this run: %d rank%s"
                % (c.checkpoint, info.name, info.step, info.ranks, "s" if info.ranks > 1 else "", info.layout,
                   comm.size if dist else 1, "s" if dist else ""))
        else:
            say("checkpoint: none in %s yet, training from the start; saving every %d steps" % (c.checkpoint, c.every))

    T = c.context
    tok = np.empty((c.batch, T), np.int32)
    tgt = np.empty((c.batch, T), np.int32)
    t0 = tlast = time.monotonic()
    total, nsum, vloss = 0.0, 0, 0.0
    step_t = []
    comm_busy = comm_exposed = 0.0
    rebalances = 0
    log = open(c.loss_log, "a" if first > 1 else "w") if c.loss_log and rank0 else None
    end = c.stop_at if 0 < c.stop_at < c.steps else c.steps  # the last step this run takes
    for step in range(first, c.steps + 1):
        # every rank draws the same batch: a distributed session takes the global batch
        fill_batch(train, c.batch, T, tok, tgt)
        s.feed(m.tokens, tok)
        s.feed(m.targets, tgt)
        ts = time.monotonic()
        s.comm_stats(reset=True)  # count the steps' communication only, not evaluation's
        s.step()
        step_t.append(time.monotonic() - ts)
        cs = s.comm_stats(reset=True)
        if step - first >= (5 if end - first + 1 > 10 else 0):
            comm_busy += cs.busy_s
            comm_exposed += cs.exposed_s
        if plan is not None:  # the session moves rows between replicas when their measured speeds differ
            sh, nrb = s.shares(64)
            if nrb != rebalances:
                say("rebalanced after step %d: rows per micro-batch of each rank now %s (measured speeds)"
                    % (step, "/".join(str(x) for x in sh[:min(comm.size, 64)])))
                rebalances = nrb
        l = float(s.fetch(m.loss))
        total += l
        nsum += 1
        if log:
            log.write("train %d %.9g\n" % (step, l))
        last = step == c.steps or step == c.stop_at
        if step % c.eval_every == 0 or last or step == first:
            tn = time.monotonic()
            tps = nsum * c.batch * T / (tn - tlast)
            vloss = eval_loss(s, m, val, c.batch, T, 8, tok, tgt)
            if log:
                log.write("val %d %.9g\n" % (step, vloss))
            say("step %5d  train loss %.6f  val loss %.6f  %.0f tokens/s  (%.1f s)"
                % (step, total / nsum, vloss, tps, tn - t0), flush=True)
            total, nsum = 0.0, 0
            tlast = time.monotonic()
        if c.checkpoint and (step % c.every == 0 or last):
            # the sampler's position goes with the state: a resumed run draws the batches this one would
            tc = time.monotonic()
            s.checkpoint_save(c.checkpoint, struct.pack("=Q", rng.state))
            say("checkpoint: step %d saved in %s (%.2f s)" % (step, c.checkpoint, time.monotonic() - tc), flush=True)
            tlast += time.monotonic() - tc
        if step == c.stop_at:
            say("stopped after step %d of %d (--stop-at)" % (step, c.steps))
            break
    if log:
        log.close()
    say("final validation loss %.4f nats/byte against the unigram baseline %.4f (%.0f%% of it)"
        % (vloss, h_unigram, 100.0 * vloss / h_unigram))
    if plan is not None and end - first >= 0:
        # the cost model against this run: the median step after the first few
        skip = 5 if end - first + 1 > 10 else 0
        rest = sorted(step_t[skip:])
        med, pred = rest[len(rest) // 2], plan.step_time
        say("cost model: predicted %.1f ms per step, measured %.1f ms (median), error %+.0f%%"
            % (1e3 * pred, 1e3 * med, 100 * (pred / med - 1)))
        ns, tp = plan.num_stages, plan.tp
        dp = comm.size // ns // tp
        sch = "gpipe" if plan.schedule == whale.Schedule.GPIPE else "1f1b"
        parts = ["dp%d" % dp if dp > 1 or (ns == 1 and tp == 1) else "", "pp%d" % ns if ns > 1 else "",
                 "tp%d" % tp if tp > 1 else ""]
        tag = "x".join(p for p in parts if p) + ("_" + sch if ns > 1 else "")
        say("RESULT costmodel_error_%s %.3f" % (tag, abs(pred / med - 1)))
        # how much of the steps' communication ran behind compute on this rank
        counted = max(len(step_t) - skip, 1)
        hidden = 1.0 - comm_exposed / comm_busy if comm_busy > 0 else 0
        say("communication (rank 0): %.2f ms per step, %.2f ms of it waited for: %.0f%% hidden behind compute"
            % (1e3 * comm_busy / counted, 1e3 * comm_exposed / counted, 100 * hidden))
        say("RESULT comm_hidden_%s %.3f" % (tag, hidden))

    # sample: slide a window of the last T bytes, one full forward per byte (no KV cache); a
    # distributed session keeps its global batch, so rank 0 samples from a local copy
    local = None
    if c.sample > 0 and dist:
        if rank0:
            local = whale.Session(g)
        n, me = comm.size, comm.rank
        for p in g.params:
            try:
                buf = s.get_param(p).reshape(-1)
                held = 1
            except whale.Error:  # another pipeline stage holds it
                buf = np.empty(s.nbytes(p) // 4, np.float32)
                held = 0
            holds = np.zeros(n, np.int32)
            holds[me] = held
            comm.allreduce(holds)
            root = 0
            while root < n - 1 and not holds[root]:
                root += 1
            comm.broadcast(buf, root)
            if rank0:
                local.set_param(p, buf.reshape(p.shape))
    if c.sample > 0 and rank0:
        s0 = local if local is not None else s
        s0.set_batch(1)
        out = bytearray(b"The meaning of life is")
        pl = len(out)
        win = np.empty((1, T), np.int32)
        dummy = np.zeros((1, T), np.int32)
        logits = np.empty((1, T, VOCAB), np.float32)
        temp = 0.8
        for pos in range(pl, pl + c.sample):
            # right-align the context in the window, padding with spaces on the left
            have = min(pos, T)
            win[0, :] = ord(" ")
            win[0, T - have:] = np.frombuffer(bytes(out[pos - have:pos]), np.uint8)
            s0.feed(m.tokens, win)
            s0.feed(m.targets, dummy)
            s0.run(whale.EVAL)
            s0.fetch(m.logits, out=logits)
            lg = [float(v) for v in logits[0, T - 1]]
            mx = -1e30
            for v in lg:
                mx = v if v > mx else mx
            z, p = 0.0, []
            for v in lg:
                e = math.exp((v - mx) / temp)
                p.append(e)
                z += e
            r = (rng.next() >> 11) / 9007199254740992.0 * z
            v = 0
            while v < VOCAB - 1:
                r -= p[v]
                if not r > 0:
                    break
                v += 1
            out.append(v)
        sys.stdout.flush()
        sys.stdout.buffer.write(b"sample:\n" + bytes(out) + b"\n")
        sys.stdout.flush()
    ctx.close()  # sessions, plan, cluster, graph and communicator first, then the context
    return 0 if vloss < h_unigram else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv))
