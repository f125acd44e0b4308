"""test_threads.py - the GIL is released while libwhale computes (a Python thread keeps running
during a step), the context lock serialises sessions of one context across threads, and
libwhale's log messages arrive in Python's logging."""
import logging
import threading
import time

import numpy as np

import whale


def big_session(ctx, batch=256, width=1024):
    g = whale.Graph(ctx)
    x = g.input("x", whale.f32, (whale.BATCH, width))
    w = g.param("w", (width, width), whale.init.normal(0, 0.01, 1))
    w2 = g.param("w2", (width, width), whale.init.normal(0, 0.01, 2))
    loss = g.mse((x @ w.T).relu() @ w2.T, x)
    g.backward(loss)
    g.optimizer(whale.SGD(lr=1e-3))
    s = g.session(batch=batch)
    xb = np.random.default_rng(0).standard_normal((batch, width)).astype(np.float32)
    s.feed(x, xb)
    return s, xb


class Spinner:
    """A thread counting as fast as it can, holding the GIL whenever it runs."""

    def __init__(self):
        self.count, self.stop = 0, False
        self.started = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()
        self.started.wait()

    def run(self):
        self.started.set()
        while not self.stop:
            self.count += 1

    def join(self):
        self.stop = True
        self.t.join()


def test_gil_released_during_step():
    ctx = whale.Context(threads=1)
    s, _ = big_session(ctx)
    s.step()
    spin = Spinner()
    try:
        counts, times = [], []
        for _ in range(3):
            c0 = spin.count
            t0 = time.perf_counter()
            s.step()
            times.append(time.perf_counter() - t0)
            counts.append(spin.count - c0)
        for _ in range(3):
            c0 = spin.count
            s.run("eval")
            counts.append(spin.count - c0)
    finally:
        spin.join()
    print("step %.1f ms; the other thread counted %s during the calls" % (1e3 * min(times), counts))
    # a held GIL would stop the counter dead for the whole call
    assert min(times) > 0.005, "the step is too short to tell"
    assert min(counts) > 1000, counts


def test_context_lock_serialises_sessions_of_one_context():
    """Two Python threads stepping two sessions of one context take turns (libwhale's rule: one
    session of a context at a time); both finish with the results of running alone."""
    ctx = whale.Context(threads=2)
    s1, _ = big_session(ctx, batch=64, width=256)
    s2, _ = big_session(ctx, batch=64, width=256)
    ref, _ = big_session(whale.Context(threads=2), batch=64, width=256)
    for _ in range(10):
        ref.step()
    errors = []

    def work(s):
        try:
            for _ in range(10):
                s.step()
        except Exception as e:  # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=work, args=(s,)) for s in (s1, s2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for s in (s1, s2):
        np.testing.assert_array_equal(s.get_param("w"), ref.get_param("w"))


def test_log_messages_go_to_python_logging():
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("whale.test")
    h = Keep()
    logger.addHandler(h)
    logger.setLevel(logging.DEBUG)
    try:
        ctx = whale.Context(threads=1, logger=logger)  # log_level follows the logger: DEBUG
        assert any(r.levelno == logging.INFO and "libwhale" in r.getMessage() for r in records)
        g = whale.Graph(ctx)
        try:
            whale.Graph.load("/nonexistent/graph.pb", ctx)
        except whale.FileError as e:
            msg = e.message
        assert any(r.levelno == logging.ERROR and r.getMessage() == msg for r in records)
        quiet = []
        h2 = Keep()
        h2.emit = lambda r: quiet.append(r)
        logger.addHandler(h2)
        whale.Context(threads=1, logger=logger, log_level=logging.ERROR)  # no INFO record now
        assert not any(r.levelno < logging.ERROR for r in quiet)
        del g
    finally:
        logger.removeHandler(h)


def test_default_logger_prints_nothing(capfd):
    ctx = whale.Context(threads=1)
    try:
        whale.Graph.load("/nonexistent/graph.pb", ctx)
    except whale.FileError:
        pass
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_close_waits_for_a_step_in_another_thread():
    """close() from one thread while another is inside step() (the GIL released) waits for the step
    to finish; the stepping thread then sees StateError, never a freed session."""
    ctx = whale.Context(threads=1)
    s, _ = big_session(ctx)
    seen = []
    started = threading.Event()

    def work():
        try:
            while True:
                started.set()
                s.step()
        except whale.StateError as e:
            seen.append(e)

    t = threading.Thread(target=work)
    t.start()
    started.wait()
    time.sleep(0.05)
    s.close()
    t.join(30)
    assert not t.is_alive() and len(seen) == 1 and "closed" in str(seen[0])
