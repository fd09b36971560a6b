"""What the control plane does with recordings: settings, sealing, checking, reading.

- ``complete`` checks a finished recording's parts (no gap, an unbroken chain), signs the
  manifest with the tenant's recording key and stores it, then records ``session.upload``;
- ``verify`` reads every part back and says which one was modified or is missing;
- ``read`` hands out one checked part for playback (live sessions too);
- ``sweep`` completes sessions whose node stopped sending for longer than the grace period,
  with a ``session.end`` the platform made (marked ``synthesized``).
"""

import base64
import contextlib
import hashlib
import logging
from datetime import timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.control_plane import errors, keys
from jumpgate.control_plane.audit.base import Auditor
from jumpgate.control_plane.clock import Clock
from jumpgate.control_plane.recordings.base import RecordingStore
from jumpgate.control_plane.secrets import SecretBox
from jumpgate.control_plane.store import Store
from jumpgate.control_plane.store.base import KeyExists, KeyNotFound
from jumpgate.protocol import certs, models, recording
from jumpgate.protocol.audit import EventType
from jumpgate.protocol.recording import Manifest, PartInfo, RecordingMeta, SessionEnd

logger = logging.getLogger(__name__)

GRACE = timedelta(hours=1)


class RecordingService:
    def __init__(
        self,
        store: Store,
        box: SecretBox,
        clock: Clock,
        recordings: RecordingStore,
        audit: Auditor,
        *,
        grace: timedelta = GRACE,
    ) -> None:
        self._store = store
        self._box = box
        self._clock = clock
        self.recordings = recordings
        self._audit = audit
        self.grace = grace

    # settings

    def settings(self, tenant: str) -> models.RecordingSettings:
        try:
            raw = self._store.get(tenant, keys.RECORDING_SETTINGS).value
        except KeyNotFound:
            return models.RecordingSettings()
        return models.RecordingSettings.model_validate_json(raw)

    def set_settings(self, tenant: str, settings: models.RecordingSettings) -> None:
        self._store.put(tenant, keys.RECORDING_SETTINGS, settings.model_dump_json().encode())

    # the tenant's key

    def _key(self, tenant: str) -> ed25519.Ed25519PrivateKey:
        context = f"{tenant}/recordings"
        try:
            sealed = self._store.get(tenant, keys.RECORDING_KEY).value.decode()
        except KeyNotFound:
            fresh = ed25519.Ed25519PrivateKey.generate()
            pem = fresh.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            with contextlib.suppress(KeyExists):  # another call made it first: use theirs
                self._store.create(
                    tenant, keys.RECORDING_KEY, self._box.seal(pem, context=context).encode()
                )
            sealed = self._store.get(tenant, keys.RECORDING_KEY).value.decode()
        key = serialization.load_pem_private_key(self._box.open(sealed, context=context), None)
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return key

    def public_key(self, tenant: str) -> str:
        return certs.openssh_public(self._key(tenant).public_key())

    # the platform's side of an upload (the proxy calls these)

    @staticmethod
    def _check_owner(meta: RecordingMeta, server_id: str) -> None:
        """A node speaks only for the sessions it recorded."""
        if meta.server_id != server_id:
            raise errors.Conflict(f"session {meta.session_id} was recorded by another node")

    def opened(self, tenant: str, meta: RecordingMeta) -> int:
        """Store a session's metadata (first upload); how many parts are stored, from 1 up to
        the first gap (where the node resumes)."""
        self._check_owner(self.recordings.put_meta(tenant, meta), meta.server_id)
        stored = 0
        for part in self.recordings.parts(tenant, meta.session_id):
            if part.index != stored + 1:
                break
            stored += 1
        return stored

    def store_part(
        self,
        tenant: str,
        session_id: str,
        *,
        server_id: str,
        previous: str,
        info: PartInfo,
        data: bytes,
    ) -> None:
        """Keep one uploaded part, after checking it is what the node says and comes next."""
        self._check_owner(self.recordings.get_meta(tenant, session_id), server_id)
        if hashlib.sha256(data).hexdigest() != info.sha256 or len(data) != info.size:
            raise errors.InvalidRequest(f"part {info.index} does not match its digest")
        if info.chain != recording.chained(previous, info.sha256):
            raise errors.InvalidRequest(f"part {info.index} does not chain to its previous")
        if info.index == 1:
            expected = recording.genesis(session_id)
        else:
            before = self.recordings.part(tenant, session_id, info.index - 1)
            if before is None:
                raise errors.InvalidRequest(
                    f"part {info.index - 1} is not stored: send the parts before {info.index}"
                )
            expected = before.chain
        if previous != expected:
            raise errors.InvalidRequest(f"part {info.index} does not follow the stored parts")
        self.recordings.put_part(tenant, session_id, info, data)

    def alive(self, tenant: str, session_id: str, server_id: str) -> None:
        self._check_owner(self.recordings.get_meta(tenant, session_id), server_id)
        self.recordings.touch(tenant, session_id)

    def complete(
        self,
        tenant: str,
        session_id: str,
        end: SessionEnd,
        *,
        server_id: str | None = None,
        parts: int | None = None,
    ) -> Manifest:
        """Sign and store the manifest of a finished recording; idempotent for the node."""
        meta = self.recordings.get_meta(tenant, session_id)
        if server_id is not None:
            self._check_owner(meta, server_id)
        existing = self.recordings.get_manifest(tenant, session_id)
        if existing is not None and not existing.end.synthesized:
            return existing
        stored = self.recordings.parts(tenant, session_id)
        problem = recording.check_chain(session_id, stored)
        if problem is None and parts is not None and parts != len(stored):
            problem = f"the node sent {parts} parts and the store has {len(stored)}"
        if problem is not None:
            raise errors.InvalidRequest(f"recording {session_id} is not complete: {problem}")
        key = self._key(tenant)
        unsigned = Manifest(
            tenant=tenant,
            meta=meta,
            end=end,
            parts=stored,
            key=certs.openssh_public(key.public_key()),
        )
        signature = base64.b64encode(key.sign(unsigned.signed_bytes())).decode()
        manifest = unsigned.model_copy(update={"signature": signature})
        self.recordings.put_manifest(tenant, manifest)
        self._audit.emit(
            EventType.SESSION_UPLOAD,
            tenant,
            outcome="W" if end.synthesized else "I",
            user=meta.user,
            login=meta.login,
            session_id=session_id,
            server_id=meta.server_id,
            nodename=meta.nodename,
            kind=meta.kind,
            started=meta.started.isoformat(),
            ended=end.ended.isoformat(),
            exit_code=end.exit_code,
            size=manifest.size,
            parts=len(stored),
            synthesized=end.synthesized,
        )
        return manifest

    def sweep(self) -> list[tuple[str, str]]:
        """Complete every recording quiet for longer than the grace period; those completed."""
        cutoff = self._clock.now() - self.grace
        done = []
        for tenant, session_id in self.recordings.unfinished():
            try:
                last = self.recordings.last_activity(tenant, session_id)
                if last > cutoff:
                    continue
                meta = self.recordings.get_meta(tenant, session_id)
                self.complete(tenant, session_id, SessionEnd(ended=last, synthesized=True))
                self._audit.emit(
                    EventType.SESSION_END,
                    tenant,
                    outcome="W",
                    user=meta.user,
                    login=meta.login,
                    session_id=session_id,
                    server_id=meta.server_id,
                    origin="platform",
                    synthesized=True,
                    reason=f"the node sent nothing for {self.grace}",
                )
                done.append((tenant, session_id))
            except errors.JumpgateError as exc:
                logger.warning(
                    "recording not completed",
                    extra={"tenant": tenant, "session_id": session_id, "reason": str(exc)},
                )
        return done

    # reading

    def _manifest_problem(self, tenant: str, manifest: Manifest) -> str | None:
        try:
            signer = certs.load_public_key(manifest.key)
            if manifest.key != self.public_key(tenant) or not isinstance(
                signer, ed25519.Ed25519PublicKey
            ):
                return "the manifest is not signed with this cluster's recording key"
            signer.verify(base64.b64decode(manifest.signature), manifest.signed_bytes())
        except (InvalidSignature, ValueError):
            return "the manifest's signature does not match its contents"
        return recording.check_chain(manifest.meta.session_id, manifest.parts)

    def _expected(self, tenant: str, session_id: str) -> tuple[list[PartInfo], Manifest | None]:
        """The parts a recording should have: the signed manifest's, else what is stored."""
        manifest = self.recordings.get_manifest(tenant, session_id)
        if manifest is not None:
            problem = self._manifest_problem(tenant, manifest)
            if problem is not None:
                raise errors.RecordingModified(f"recording {session_id}: {problem}")
            return manifest.parts, manifest
        parts = self.recordings.parts(tenant, session_id)
        problem = recording.check_chain(session_id, parts)
        if problem is not None:
            raise errors.RecordingModified(f"recording {session_id}: {problem}")
        return parts, None

    def describe(self, tenant: str, session_id: str) -> models.RecordingInfo:
        meta = self.recordings.get_meta(tenant, session_id)
        parts, manifest = self._expected(tenant, session_id)
        return models.RecordingInfo(
            meta=meta,
            parts=parts,
            complete=manifest is not None,
            end=manifest.end if manifest is not None else None,
        )

    def _check_part(
        self, tenant: str, session_id: str, info: PartInfo, total: int
    ) -> tuple[bytes, str | None]:
        """A part's bytes and what is wrong with them (missing, modified), if anything."""
        try:
            data = self.recordings.get_part(tenant, session_id, info)
        except errors.NotFound:
            return b"", f"part {info.index} of {total} is missing"
        digest = hashlib.sha256(data).hexdigest()
        if digest != info.sha256:
            return data, (
                f"part {info.index} of {total} was modified "
                f"(sha256 {digest[:12]}…, recorded {info.sha256[:12]}…)"
            )
        return data, None

    def read(self, tenant: str, session_id: str, index: int) -> models.RecordingPart:
        """Part ``index`` for playback, checked against what was recorded."""
        parts, manifest = self._expected(tenant, session_id)
        if not 1 <= index <= len(parts):
            raise errors.NotFound(f"recording {session_id} has no part {index} (yet)")
        data, problem = self._check_part(tenant, session_id, parts[index - 1], len(parts))
        if problem is not None:
            raise errors.RecordingModified(
                f"recording {session_id}: {problem}: see jumpctl recordings verify"
            )
        return models.RecordingPart(
            index=index,
            sha256=parts[index - 1].sha256,
            data=base64.b64encode(data).decode(),
            complete=manifest is not None,
        )

    def verify(self, tenant: str, session_id: str) -> models.RecordingVerdict:
        self.recordings.get_meta(tenant, session_id)
        try:
            parts, manifest = self._expected(tenant, session_id)
        except errors.RecordingModified as exc:
            return models.RecordingVerdict(
                session_id=session_id, ok=False, complete=False, parts=0, problems=[exc.message]
            )
        problems = [
            problem
            for info in parts
            if (problem := self._check_part(tenant, session_id, info, len(parts))[1]) is not None
        ]
        return models.RecordingVerdict(
            session_id=session_id,
            ok=not problems,
            complete=manifest is not None,
            parts=len(parts),
            problems=problems,
        )
