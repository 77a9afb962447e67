"""How the frontend finds workers.

A worker registers an `Instance` (its model and address); the frontend watches the set of
instances and routes to whatever is there now. Two backends share one interface:

- embedded (the default): a directory on this machine, one JSON file per worker. No extra
  service; a worker that dies without cleaning up is noticed by its process id.
- etcd: one key per worker under a lease that the worker keeps alive, so a worker on any machine
  that dies disappears when its lease expires.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import stat
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

Snapshot = dict[str, "Instance"]
POLL_SECONDS = 0.25
DEFAULT_LEASE_TTL = 10
CALL_SECONDS = 5  # one request to etcd
RETRY_FIRST, RETRY_MAX = 0.5, 5.0  # seconds between attempts to reach etcd again: doubling, with jitter
log = logging.getLogger("dynamo.discovery")


class DiscoveryError(Exception):
    """The discovery backend cannot be used; the message names it and the fix."""


@dataclass(frozen=True)
class Instance:
    """A running worker as the frontend sees it."""
    id: str
    model: str
    framework: str
    address: str  # host:port of the worker's request port
    pid: int
    host: str
    # The model folder whose chat template and tokenizer the frontend applies (frontend/preprocess.py),
    # for a worker whose engine takes token ids; empty: the worker gets the chat as it came.
    model_dir: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> Instance:
        return cls(**json.loads(text))


class Discovery(ABC):
    """Register this worker, or watch the workers of a namespace. `problem`: why the view of the
    workers may be stale (the backend cannot be reached and is retried), or None."""
    problem: str | None = None

    @abstractmethod
    async def register(self, instance: Instance) -> None: ...

    @abstractmethod
    async def unregister(self) -> None: ...

    @abstractmethod
    async def watch(self, on_change: Callable[[Snapshot], None]) -> None:
        """Call `on_change` with every instance now registered, at once and whenever the set changes.
        Runs until cancelled."""


def default_directory() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(tempfile.gettempdir(), f"dynamo-{os.getuid()}")
    return Path(base) / "dynamo" / "discovery"


def private_directory(path: Path) -> Path:
    """`path`, created 0700 where missing, and trusted only when no other user can have planted a
    worker there: it is ours and no one else can write it, and every directory above it is ours or
    root's and no one else can write it unless it is sticky (/tmp). Else DiscoveryError."""
    path = path.absolute()
    missing = []
    for directory in (path, *path.parents):
        if directory.exists():
            break
        missing.append(directory)
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass  # another of our processes made it first: checked below like any other
        except OSError as error:
            raise DiscoveryError(f"cannot create the discovery directory {directory}: {error.strerror}; "
                                 f"pass --discovery-dir with a directory of yours") from None
    me = os.geteuid()
    for directory in (path, *path.parents):
        info = directory.stat()
        writable_by_others = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if directory == path:
            problem = (f"it belongs to user {info.st_uid}" if info.st_uid != me
                       else "others can write it" if writable_by_others else None)
        else:
            problem = (f"{directory} belongs to user {info.st_uid}" if info.st_uid not in (me, 0)
                       else f"others can write {directory}" if writable_by_others and not info.st_mode & stat.S_ISVTX
                       else None)
        if problem:
            raise DiscoveryError(f"the discovery directory {path} is not private ({problem}): another user could "
                                 f"register a worker and receive the prompts; pass --discovery-dir with a "
                                 f"directory only you can write")
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: it exists
    return True


class EmbeddedDiscovery(Discovery):
    """Instances are files in DIRECTORY/NAMESPACE; all processes run on this machine."""

    def __init__(self, directory: Path, namespace: str) -> None:
        self.directory = directory / namespace  # made private (private_directory) when first used
        self._file: Path | None = None
        self._read: dict[str, Instance] = {}  # file name → instance: a worker's file never changes

    async def register(self, instance: Instance) -> None:
        private_directory(self.directory)
        try:
            path = self.directory / f"{instance.id}.json"
            partial = path.with_suffix(".tmp")
            partial.write_text(instance.to_json())
            partial.replace(path)  # the frontend never reads half a file
        except OSError as error:
            raise DiscoveryError(f"cannot register in {self.directory}: {error.strerror}; "
                                 f"pass --discovery-dir with a writable directory") from None
        self._file = path

    async def unregister(self) -> None:
        if self._file:
            self._file.unlink(missing_ok=True)
            self._file = None

    def snapshot(self) -> Snapshot:
        """The live instances; files left by dead workers are removed."""
        found: Snapshot = {}
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return found
        read: dict[str, Instance] = {}
        for entry in entries:
            if not entry.name.endswith(".json"):
                continue
            instance = self._read.get(entry.name)
            if instance is None:
                try:
                    instance = Instance.from_json(Path(entry.path).read_bytes())
                except (OSError, ValueError, TypeError):
                    continue  # removed while we read it, or not ours
            if _alive(instance.pid):
                read[entry.name] = found[instance.id] = instance
            else:
                Path(entry.path).unlink(missing_ok=True)
        self._read = read
        return found

    async def watch(self, on_change: Callable[[Snapshot], None]) -> None:
        private_directory(self.directory)  # made now, so that no other user can make it first
        last: Snapshot | None = None
        while True:
            now = self.snapshot()
            if now != last:
                on_change(now)
                last = now
            await asyncio.sleep(POLL_SECONDS)


class EtcdDiscovery(Discovery):
    """Instances are keys under /dynamo/NAMESPACE/instances/, each bound to its worker's lease.

    As etcd's own clients do, both sides outlive an etcd outage. A worker keeps its lease alive
    every third of its TTL and, when the lease expired while etcd was away, registers again under
    a new one. The frontend keeps routing to the workers it knew (its `problem` says why the view
    may be stale), retries with exponential backoff, and keeps a worker whose key vanished for one
    lease TTL more (_Lingering): the time a live worker needs to register again."""

    def __init__(self, endpoint: str, namespace: str, lease_ttl: int = DEFAULT_LEASE_TTL) -> None:
        from urllib.parse import urlsplit

        from etcd3gw.client import Etcd3Client

        url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        self.endpoint = endpoint
        self.client = Etcd3Client(host=url.hostname or "localhost", port=url.port or 2379,
                                  protocol=url.scheme or "http", timeout=CALL_SECONDS)
        self.prefix = f"/dynamo/{namespace}/instances/"
        self.lease_ttl = lease_ttl
        self._instance: Instance | None = None
        self._lease = None
        self._registering = threading.Lock()  # the keep-alive thread's registering again, or unregister
        self._stop = threading.Event()

    async def _call(self, function, *args, **kwargs):
        from etcd3gw.exceptions import Etcd3Exception
        from requests.exceptions import RequestException
        try:
            # etcd3gw sets no timeout on creating a watch: a frozen etcd would hold it forever
            return await asyncio.wait_for(asyncio.to_thread(function, *args, **kwargs), CALL_SECONDS + 1)
        except (RequestException, Etcd3Exception, asyncio.TimeoutError) as error:
            raise DiscoveryError(f"cannot reach etcd at {self.endpoint} ({type(error).__name__}); "
                                 f"start etcd there or pass --etcd-endpoints") from None

    def _put(self) -> None:
        """Register the instance under a new lease (blocking)."""
        with self._registering:
            if self._stop.is_set():
                return
            self._lease = self.client.lease(self.lease_ttl)
            self.client.put(self.prefix + self._instance.id, self._instance.to_json(), lease=self._lease)

    async def register(self, instance: Instance) -> None:
        self._instance = instance
        await self._call(self._put)
        threading.Thread(target=self._keep_alive, name="etcd-lease", daemon=True).start()

    def _keep_alive(self) -> None:
        while not self._stop.wait(self.lease_ttl / 3):
            try:
                if self._lease.refresh() > 0:
                    continue
                # etcd was away (or frozen) for longer than the TTL: the key is gone with the lease
                log.warning("etcd at %s lost this worker's registration (its lease expired); registering again",
                            self.endpoint)
                self._put()
                log.warning("registered with etcd at %s again", self.endpoint)
            except Exception:  # etcd away, or an answer etcd3gw cannot read: this thread must go on
                continue  # the next refresh may still be in time, or registers again

    async def unregister(self) -> None:
        self._stop.set()
        with self._registering:
            lease, self._lease = self._lease, None
        if lease is not None:
            try:
                await asyncio.to_thread(lease.revoke)
            except Exception:
                pass  # etcd is gone; the lease expires on its own

    def _list(self) -> Snapshot:
        found: Snapshot = {}
        for value, _meta in self.client.get_prefix(self.prefix):
            try:
                instance = Instance.from_json(value)
            except (ValueError, TypeError):
                continue
            found[instance.id] = instance
        return found

    async def watch(self, on_change: Callable[[Snapshot], None]) -> None:
        loop = asyncio.get_running_loop()
        view = _Lingering(self.lease_ttl)
        last: Snapshot | None = None
        retry = RETRY_FIRST
        while True:
            try:
                await self._call(self._list)  # reachable? (a watch is created only then: see _call)
                events, cancel = await self._call(self.client.watch_prefix, self.prefix)
                try:
                    changed = _pump(events, loop)
                    while True:
                        now = view.update(await self._call(self._list), loop.time())
                        if self.problem is not None:
                            log.warning("etcd at %s is back; the view of the workers is current again", self.endpoint)
                            self.problem, retry = None, RETRY_FIRST
                        if now != last:
                            on_change(now)
                            last = now
                        changed.clear()
                        try:
                            await asyncio.wait_for(changed.wait(), timeout=view.quiet(loop.time()))
                        except asyncio.TimeoutError:
                            break  # quiet for a while: list, and watch anew (a watch etcd's restart broke says nothing)
                finally:
                    cancel()
            except DiscoveryError as error:
                known = len(last or {})
                if self.problem is None:
                    log.warning("%s; serving the %d workers known before, and retrying", error, known)
                self.problem = f"{error}; serving the {known} workers known before, and retrying"
                await asyncio.sleep(retry * random.uniform(0.8, 1.2))
                retry = min(retry * 2, RETRY_MAX)


class _Lingering:
    """The instances listed, and for one lease TTL more those whose key vanished: a lease that expired
    while etcd was away or frozen takes the key of a live worker, which registers again within its
    TTL. A worker that really stopped closed its connection, which the router sees at once."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.instances: Snapshot = {}
        self.vanished: dict[str, float] = {}  # id → when its key was first missing

    def update(self, listed: Snapshot, now: float) -> Snapshot:
        for instance_id in self.instances.keys() - listed.keys():
            self.vanished.setdefault(instance_id, now)
        self.vanished = {key: since for key, since in self.vanished.items()
                         if key not in listed and now - since < self.ttl}
        self.instances = {**{key: self.instances[key] for key in self.vanished}, **listed}
        return self.instances

    def quiet(self, now: float) -> float:
        """Seconds until the view must be listed again."""
        return min([self.ttl, *(since + self.ttl - now for since in self.vanished.values())])


def _pump(events, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    """An event set on each of the watch's events: etcd3gw's watch blocks, so a thread reads it."""
    changed = asyncio.Event()

    def pump() -> None:
        try:
            for _event in events:
                loop.call_soon_threadsafe(changed.set)
        except Exception:
            pass
        loop.call_soon_threadsafe(changed.set)

    threading.Thread(target=pump, name="etcd-watch", daemon=True).start()
    return changed


def add_arguments(parser) -> None:
    """The discovery flags shared by the frontend and every worker."""
    group = parser.add_argument_group("discovery")
    group.add_argument("--namespace", default=os.environ.get("DYN_NAMESPACE", "dynamo"),
                       help="workers and frontends of one deployment share a namespace (default: dynamo)")
    group.add_argument("--discovery", choices=["embedded", "etcd"],
                       default=os.environ.get("DYN_DISCOVERY") or ("etcd" if os.environ.get("ETCD_ENDPOINTS") else "embedded"),
                       help="embedded: processes on this machine, no service needed (default); "
                            "etcd: workers on several machines")
    group.add_argument("--discovery-dir", type=Path, default=Path(os.environ["DYN_DISCOVERY_DIR"])
                       if os.environ.get("DYN_DISCOVERY_DIR") else default_directory(),
                       help="embedded discovery's directory (default: %(default)s)")
    group.add_argument("--etcd-endpoints", default=os.environ.get("ETCD_ENDPOINTS", "http://localhost:2379"),
                       help="etcd's address (default: %(default)s, or ETCD_ENDPOINTS)")
    group.add_argument("--lease-ttl", type=int, default=DEFAULT_LEASE_TTL,
                       help="etcd: seconds after which a dead worker disappears (default: %(default)s)")


def from_arguments(args) -> Discovery:
    if args.discovery == "etcd":
        if args.lease_ttl < 1:
            raise DiscoveryError(f"--lease-ttl {args.lease_ttl}: must be at least 1 second")
        return EtcdDiscovery(args.etcd_endpoints.split(",")[0], args.namespace, args.lease_ttl)
    return EmbeddedDiscovery(args.discovery_dir, args.namespace)


def this_host() -> str:
    return socket.gethostname()
