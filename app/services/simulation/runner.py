"""Running a simulation: read and order the history, partition it by member, replay baseline and candidate in worker processes, merge."""
import datetime as dt
import hashlib
import multiprocessing
import os
import shutil
import tempfile
import zlib

from app.errors import Problem
from app.services.simulation import sources
from app.services.simulation.replay import parse_at


def member_of(rec):
    """The member a record belongs to (tickets: their user)."""
    mid = rec.get("member_id")
    if mid is None and isinstance(rec.get("ticket"), dict):
        mid = rec["ticket"].get("user_id")
    return mid


def _sample_filter(sample, member_ids=None):
    """A predicate on member ids from ``--members``: ``N%`` (stable hash), ``@file`` (one id a line), or ``N``."""
    if not sample:
        return None
    sample = str(sample)
    if sample.endswith("%"):
        pct = float(sample[:-1])
        return lambda m: zlib.crc32(m.encode()) % 10000 < pct * 100
    if sample.startswith("@"):
        with open(sample[1:], encoding="utf-8") as fh:
            ids = {line.strip() for line in fh if line.strip()}
        return ids.__contains__
    try:
        n = int(sample)
    except ValueError:
        raise Problem(422, "bad-member-sample", "Bad member sample",
                      f"--members must be N, N% or @file, not {sample!r}") from None
    chosen = set(sorted(member_ids or (), key=lambda m: (zlib.crc32(m.encode()), m))[:n])
    return chosen.__contains__


def _checked(seq, rec):
    if not isinstance(rec.get("type"), str) or not rec.get("occurred_at") or member_of(rec) is None:
        raise Problem(422, "bad-event-record", "Bad event record",
                      f"record {seq + 1}: type, occurred_at and member_id (or ticket.user_id) are required")
    return parse_at(rec["occurred_at"])


def partition_line(at, seq, text):
    """A partition line: ``<instant ISO>\t<sequence>\t<record JSON>`` (the record's text as read)."""
    return f"{at.isoformat()}\t{seq}\t{text}\n"


def events_digest(partition_digests):
    """The history's fingerprint from each partition's sha256 (hex) of its ordered lines, in partition order:
    the digest itself for one partition, else the sha256 of their concatenation (planner and workers agree)."""
    if len(partition_digests) == 1:
        return partition_digests[0]
    return hashlib.sha256("".join(partition_digests).encode()).hexdigest()


def partition_of(member, partitions):
    """The partition of a member (stable hash)."""
    return zlib.crc32(member.encode()) % partitions if partitions > 1 else 0


def _line_key(line):
    """(instant, sequence) of a partition line ``<instant ISO>\t<sequence>\t<record JSON>``."""
    at, seq, _ = line.split("\t", 2)
    return at, int(seq)


def plan(source, end, sample=None, partitions=1, workdir=None):
    """Read, check, order and partition the history, streaming (memory does not grow with an ordered input).

    Records go straight to one file per partition; when the input was not in time order, each partition
    file is then sorted on its own (its lines as text), one partition at a time.

    Returns:
        (folder, [partition file paths], counts per partition, ``events_digest`` of the ordered partitions).
    """
    keep = None
    if sample and str(sample).isdigit():  # N members: a first pass learns the member ids
        keep = _sample_filter(sample, {member_of(r) for r in sources.read(source) if member_of(r) is not None})
    elif sample:
        keep = _sample_filter(sample)
    folder = tempfile.mkdtemp(prefix="patron-simplan-", dir=workdir)
    paths = [os.path.join(folder, f"part-{i}.jsonl") for i in range(partitions)]
    files = [open(p, "w", encoding="utf-8") for p in paths]
    counts = [0] * partitions
    ordered, last = True, None
    try:
        for seq, (rec, text) in enumerate(sources.read_with_text(source)):
            at = _checked(seq, rec)
            if at >= end or (keep is not None and not keep(member_of(rec))):
                continue
            if last is not None and at < last:
                ordered = False
            last = at if last is None or at > last else last
            i = partition_of(member_of(rec), partitions)
            files[i].write(partition_line(at, seq, text))  # the record's text as read: no re-encoding
            counts[i] += 1
    finally:
        for fh in files:
            fh.close()
    digests = []
    for path in paths:
        if not ordered:
            with open(path, encoding="utf-8") as fh:
                lines = sorted(fh, key=_line_key)
            with open(path, "w", encoding="utf-8") as fh:
                fh.writelines(lines)
            del lines
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digests.append(digest.hexdigest())
    return folder, paths, counts, events_digest(digests)


class Unordered(Exception):
    """A worker reading the source found its records out of time order: the planner sorts them instead."""


class Stream:
    """One partition of a file source, read by the worker that replays it (no planning pass in the parent).

    Iterating yields the records the planner would have written to the partition file, in the same order,
    in the replay format (``_at``, ``_seq``, ``_digest``: see ``replay.read_partition``); it raises
    ``Unordered`` when the partition is not in time order (the caller then plans and sorts), and
    ``Problem`` for a bad record of any partition (each worker reads them all). ``digest`` (sha256 of the
    partition lines; only when ``with_digest``: one policy set's workers report it) and ``count`` are
    complete once iteration ends.
    """

    def __init__(self, source, end, sample=None, partitions=1, partition=0, with_digest=True):
        self.source, self.end, self.sample = source, end, sample
        self.partitions, self.partition = partitions, partition
        self.with_digest = with_digest
        self.digest, self.count = None, 0

    def __iter__(self):
        from app.services.simulation.replay import fingerprint
        keep = _sample_filter(self.sample) if self.sample else None
        end, partitions, partition = self.end, self.partitions, self.partition
        sha = hashlib.sha256() if self.with_digest else None
        last = None
        for seq, (rec, text) in enumerate(sources.read_with_text(self.source)):
            at = _checked(seq, rec)
            if at >= end:
                continue
            member = member_of(rec)
            if (keep is not None and not keep(member)) or partition_of(member, partitions) != partition:
                continue
            if last is not None and at < last:
                raise Unordered(f"record {seq + 1} is earlier than the one before it")
            last = at
            if sha is not None:
                sha.update(partition_line(at, seq, text).encode())
            self.count += 1
            rec["_at"], rec["_seq"], rec["_digest"] = at, seq, fingerprint(text)
            yield rec
        self.digest = sha.hexdigest() if sha is not None else None


def streams(source, sample):
    """Whether workers can read ``source`` themselves: a file, and a sample that needs no first pass."""
    return source != "db" and not (sample and str(sample).isdigit())


def _lines(path):
    """Line count of a file (the progress total while workers read it; records cannot be more)."""
    n = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            n += chunk.count(b"\n")
    return n


def policy_files(spec):
    """{"policies/..": text, "rules/..": text} of ``active`` (the live active set) or a folder."""
    from app import policy
    if spec in (None, "", "active"):
        return dict(policy.active().files)
    if isinstance(spec, dict):  # the API: a stored version or inline files
        if "version" in spec:
            from app.policy import store
            files = store.files_of(spec["version"])
            if files is None:
                raise Problem(422, "unknown-policy-version", "Unknown policy version",
                              f"no stored policy version {spec['version']!r}")
            return files
        files = dict(spec["files"])
        ps, errors = policy.check(files)
        if errors:
            raise policy.PolicyInvalid(errors, ps.version)
        return files
    if not os.path.isdir(spec):
        raise Problem(422, "bad-policy-folder", "Bad policy folder",
                      f"{spec!r} is not a folder holding policies/ and rules/")
    files = policy.read_root(spec)
    ps, errors = policy.check(files)
    if errors:
        raise policy.PolicyInvalid(errors, ps.version)
    return files


def _merge(a, b):
    """Sum two partition results (members are disjoint across partitions)."""
    if isinstance(a, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = _merge(out[k], v) if k in out else v
        return out
    if isinstance(a, list):  # monthly snapshots: same months in every partition
        return [_merge(x, y) for x, y in zip(a, b)]
    if isinstance(a, bool) or not isinstance(a, int):
        return a
    return a + b


def execute(spec, progress=None):
    """Run a whole simulation.

    Args:
        spec: {"candidate": folder, "baseline": "active"|folder, "events": "db"|path, "from": "YYYY-MM-DD",
               "to": "YYYY-MM-DD", "members": sample|None, "partitions": int, "workers": int,
               "point_value_fen": int}.
        progress: called with (done, total) as records are replayed (both replays together).

    Returns:
        {"inputs": ..., "baseline": metrics, "candidate": metrics} (member states included).
    """
    from app.services.membership import policy as mp
    cand_files = policy_files(spec["candidate"])
    base_files = policy_files(spec.get("baseline") or "active")
    tz = mp.Config(_policy_set(cand_files)).tz
    start = _local_date(spec["from"], tz, "/from")
    end = _local_date(spec["to"], tz, "/to")
    if end <= start:
        raise Problem(422, "validation-failed", "Validation failed", "--to must be after --from",
                      errors=[{"pointer": "/to", "validator": "minimum", "message": "must be after from"}])
    partitions = max(1, int(spec.get("partitions") or 1))
    workers = int(spec.get("workers") or os.cpu_count() or 2)
    common = {"from": start.isoformat(), "to": end.isoformat(),
              "point_value_fen": int(spec.get("point_value_fen") or 1), "workdir": spec.get("workdir")}
    sets = (("baseline", base_files), ("candidate", cand_files))
    results = None
    if streams(spec["events"], spec.get("members")):
        # Each worker reads the file and keeps its partition: no serial planning pass before the replays.
        # The baseline's workers fingerprint the ordered partitions (the candidate's read the same lines).
        estimate = _lines(spec["events"]) if os.path.exists(spec["events"]) else 0
        tasks = [{"label": label, "partition": i, "files": files, "source": spec["events"],
                  "partitions": partitions, "members": spec.get("members"), "digest": label == "baseline",
                  **common}
                 for label, files in sets for i in range(partitions)]
        try:
            results = _run_workers(tasks, workers, estimate * len(sets), progress)
        except Unordered:
            results = None  # not in time order: plan (sort) below
        if results is not None:
            counts = [results[("baseline", i)]["events_replayed"] for i in range(partitions)]
            digest = events_digest([results[("baseline", i)]["events_digest"] for i in range(partitions)])
    if results is None:
        folder, paths, counts, digest = plan(spec["events"], end, spec.get("members"), partitions,
                                             spec.get("workdir"))
        try:
            tasks = [{"label": label, "partition": i, "files": files, "events_path": path, "total": counts[i],
                      **common}
                     for label, files in sets for i, path in enumerate(paths)]
            results = _run_workers(tasks, workers, sum(counts) * len(sets), progress)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    for res in results.values():
        res.pop("events_digest", None)
    if progress:
        done = sum(res["events_replayed"] for res in results.values())
        progress(done, done)
    out = {"inputs": {"from": spec["from"], "to": spec["to"], "window_utc": [start.isoformat() + "Z",
                                                                               end.isoformat() + "Z"],
                      "events_sha256": digest, "records": sum(counts), "members_sample": spec.get("members"),
                      "partitions": partitions, "point_value_fen": int(spec.get("point_value_fen") or 1),
                      "baseline": _describe(spec.get("baseline") or "active"),
                      "candidate": _describe(spec["candidate"])}}
    for label in ("baseline", "candidate"):
        parts = [results[(label, i)] for i in range(partitions)]
        merged = parts[0]
        for p in parts[1:]:
            merged = _merge(merged, p)
        merged["points"]["point_value_fen"] = parts[0]["points"]["point_value_fen"]  # a setting, not a sum
        out[label] = merged
    return out


def _describe(source):
    """How a policy set was named (never its text)."""
    if isinstance(source, dict):
        return f"version {source['version']}" if "version" in source else "inline files"
    return str(source)


def _policy_set(files):
    from app.policy import PolicySet
    return PolicySet(files)


def _local_date(text, tz, pointer):
    try:
        day = dt.date.fromisoformat(str(text))
    except ValueError:
        raise Problem(422, "validation-failed", "Validation failed", f"{pointer[1:]} must be a date YYYY-MM-DD",
                      errors=[{"pointer": pointer, "validator": "format", "message": "expected YYYY-MM-DD"}]) from None
    local = dt.datetime(day.year, day.month, day.day, tzinfo=tz)
    return local.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _run_workers(tasks, workers, total, progress):
    """Run the replays in spawned processes (each its own database and engine), ``workers`` at a time."""
    from app.services.simulation.replay import run_task
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    pending = list(tasks)
    running = {}
    results, done_by = {}, {}
    workers = max(1, workers)
    try:
        while pending or running:
            while pending and len(running) < workers:
                task = pending.pop(0)
                proc = ctx.Process(target=run_task, args=(task, queue), daemon=True)
                proc.start()
                running[(task["label"], task["partition"])] = proc
            try:
                kind, label, part, payload = queue.get(timeout=1.0)
            except Exception:  # noqa: BLE001 - queue.Empty: check for workers that died silently
                for key, proc in list(running.items()):
                    if not proc.is_alive() and key not in results:
                        proc.join()
                        if proc.exitcode != 0:
                            raise Problem(500, "simulation-failed", "Simulation failed",
                                          f"replay {key[0]} partition {key[1]} exited with {proc.exitcode}")
                continue
            if kind == "unordered":
                raise Unordered(payload)
            if kind == "problem":
                raise Problem(**payload)
            if kind == "progress":
                done_by[(label, part)] = payload
                if progress:
                    progress(sum(done_by.values()), max(total, sum(done_by.values())))
            elif kind == "done":
                results[(label, part)] = payload
                done_by[(label, part)] = payload.get("events_replayed", 0)
                proc = running.pop((label, part))
                proc.join()
                if progress:
                    progress(sum(done_by.values()), max(total, sum(done_by.values())))
            else:
                raise Problem(500, "simulation-failed", "Simulation failed", f"replay {label} failed: {payload}")
    finally:
        for proc in running.values():
            if proc.is_alive():
                proc.terminate()
            proc.join()
    return results
