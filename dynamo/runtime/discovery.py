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
import os
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
    worker there: it is ours and only we can write it, and so is every directory above it, unless
    root owns that one and it is not writable by others or is sticky (/tmp). Else DiscoveryError."""
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
    """Instances are keys under /dynamo/NAMESPACE/instances/, each bound to its worker's lease."""

    def __init__(self, endpoint: str, namespace: str, lease_ttl: int = DEFAULT_LEASE_TTL) -> None:
        from urllib.parse import urlsplit

        from etcd3gw.client import Etcd3Client

        url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        self.endpoint = endpoint
        self.client = Etcd3Client(host=url.hostname or "localhost", port=url.port or 2379,
                                  protocol=url.scheme or "http", timeout=5)
        self.prefix = f"/dynamo/{namespace}/instances/"
        self.lease_ttl = lease_ttl
        self._lease = None
        self._stop = threading.Event()

    async def _call(self, function, *args, **kwargs):
        from etcd3gw.exceptions import Etcd3Exception
        from requests.exceptions import RequestException
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except (RequestException, Etcd3Exception) as error:
            raise DiscoveryError(f"cannot reach etcd at {self.endpoint} ({type(error).__name__}); "
                                 f"start etcd there or pass --etcd-endpoints") from None

    async def register(self, instance: Instance) -> None:
        self._lease = await self._call(self.client.lease, self.lease_ttl)
        await self._call(self.client.put, self.prefix + instance.id, instance.to_json(), lease=self._lease)
        threading.Thread(target=self._keep_alive, name="etcd-lease", daemon=True).start()

    def _keep_alive(self) -> None:
        while not self._stop.wait(self.lease_ttl / 3):
            try:
                self._lease.refresh()
            except Exception:  # etcd away for a moment: the next refresh may still be in time
                continue

    async def unregister(self) -> None:
        self._stop.set()
        if self._lease is not None:
            try:
                await asyncio.to_thread(self._lease.revoke)
            except Exception:
                pass  # etcd is gone; the lease expires on its own
            self._lease = None

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
        changed = asyncio.Event()
        events, cancel = await self._call(self.client.watch_prefix, self.prefix)

        def pump() -> None:  # etcd3gw's watch blocks: a thread wakes the loop on each event
            try:
                for _event in events:
                    loop.call_soon_threadsafe(changed.set)
            except Exception:
                pass
            loop.call_soon_threadsafe(changed.set)

        threading.Thread(target=pump, name="etcd-watch", daemon=True).start()
        try:
            last: Snapshot | None = None
            while True:
                now = await self._call(self._list)
                if now != last:
                    on_change(now)
                    last = now
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), timeout=self.lease_ttl)
                except asyncio.TimeoutError:
                    pass  # list again anyway: a broken watch must not freeze the view
        finally:
            cancel()


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
