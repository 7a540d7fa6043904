"""Measure the stand-in's `_id` lookup and upsert rates through pymongo.

Usage: target/standin-venv/bin/python tests/standin/bench.py [--docs 2000] [--ops 5000]
                                                              [--clients 1]
Starts its own stand-in, fills a collection with --docs documents (with a unique compound
index, like the rollup collections) and times --ops `_id` finds, `_id` upserts that update
($inc/$set/$setOnInsert, as the rollups do) and `_id` upserts that insert, one round trip
each. With --clients N, N processes share the ops (total rate = server throughput).
The stand-in's own time per command is logged on stderr at shutdown with --server-stats.
"""
import argparse
import multiprocessing
import os
import subprocess
import sys
import time

import pymongo

HERE = os.path.dirname(os.path.abspath(__file__))


def _work(uri, phase, start, count, n_docs, barrier):
    coll = pymongo.MongoClient(uri).bench.rollups
    coll.find_one({"_id": "k0"})
    barrier.wait()
    for i in range(start, start + count):
        if phase == "find":
            coll.find_one({"_id": "k%d" % (i % n_docs)})
        elif phase == "update":
            coll.update_one({"_id": "k%d" % (i % n_docs)},
                            {"$inc": {"count": 1}, "$set": {"final": False},
                             "$setOnInsert": {"created": 1}}, upsert=True)
        else:
            coll.update_one({"_id": "new%d" % i},
                            {"$inc": {"count": 1},
                             "$setOnInsert": {"metric": "x", "bucket": -i - 1}}, upsert=True)


def run_phase(uri, phase, n_ops, n_docs, clients):
    if clients == 1:
        coll = pymongo.MongoClient(uri).bench.rollups
        coll.find_one({"_id": "k0"})
        t0 = time.perf_counter()
        barrier = type("B", (), {"wait": lambda self: None})()
        _work(uri, phase, 0, n_ops, n_docs, barrier)
        return n_ops / (time.perf_counter() - t0)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(clients + 1)
    share = n_ops // clients
    procs = [ctx.Process(target=_work, args=(uri, phase, k * share, share, n_docs, barrier))
             for k in range(clients)]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    for p in procs:
        p.join()
    return share * clients / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--ops", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=1)
    args = ap.parse_args()
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "standin.py")],
                            stdout=subprocess.PIPE, text=True)
    try:
        hostport = proc.stdout.readline().split()[1]
        uri = "mongodb://%s/?replicaSet=rs0" % hostport
        coll = pymongo.MongoClient(uri).bench.rollups
        coll.create_index([("metric", 1), ("bucket", 1)], unique=True)
        coll.insert_many([{"_id": "k%d" % i, "metric": "m%d" % (i % 50), "bucket": i,
                           "count": 0} for i in range(args.docs)])
        print("docs=%d ops=%d clients=%d" % (args.docs, args.ops, args.clients))
        for phase, label in (("find", "_id finds"), ("update", "_id upserts (update)"),
                             ("insert", "_id upserts (insert)")):
            rate = run_phase(uri, phase, args.ops, args.docs, args.clients)
            print("%-22s %8.0f /s" % (label + ":", rate))
        print("documents now: %d" % coll.count_documents({}))
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
