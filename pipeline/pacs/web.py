"""DICOMweb client over dicomweb-client: QIDO-RS (find), WADO-RS (retrieve) and STOW-RS (store).

The same three operations as :class:`pipeline.pacs.dimse.DimseClient`, with the same errors:
a :class:`~pipeline.errors.PacsError` naming the node's URL (never its credentials).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pydicom
import requests
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.datadict import tag_for_keyword

from pipeline.errors import PacsError
from pipeline.pacs.nodes import Node
from pipeline.pacs.query import QUERY_KEYS, StoreOutcome, instance_file_name

logging.getLogger("dicomweb_client").setLevel(logging.WARNING)
log = logging.getLogger(__name__)


#: Every instance of a retrieve as stored at the node (no transcoding), as Part 10 files.
_RETRIEVE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def _tag(keyword: str) -> str:
    return f"{tag_for_keyword(keyword):08X}"


class WebClient:
    """Query, retrieve and store against one DICOMweb service."""

    def __init__(self, node: Node):
        self.node = node
        session = requests.Session()
        if node.tls is not None:
            session.verify = str(node.tls.ca_file) if node.tls.verify and node.tls.ca_file else node.tls.verify
            if node.tls.cert_file:
                session.cert = (str(node.tls.cert_file), str(node.tls.key_file))
        self.session = session
        self.client = DICOMwebClient(node.url, session=session, timeout=node.timeout_s)
        self.client.set_http_retry_params(retry=False)

    @contextmanager
    def _talking(self, what: str) -> Iterator[None]:
        try:
            yield
        except requests.exceptions.Timeout as error:
            raise PacsError(f"node {self.node.label} gave no {what} answer within {self.node.timeout_s:g} s "
                            "(timeout)") from error
        except requests.exceptions.ConnectionError as error:
            raise PacsError(f"node {self.node.label} unreachable: cannot connect ({type(error).__name__})",
                            hint="check the URL and that the service is running") from error
        except requests.exceptions.HTTPError as error:
            code = error.response.status_code if error.response is not None else "?"
            if code in (401, 403):
                raise PacsError(f"node {self.node.label} refused us (HTTP {code})",
                                hint="check the credentials and TLS client certificate") from error
            raise PacsError(f"node {self.node.label} answered the {what} with HTTP {code}") from error

    def find(self, level: str, keys: dict[str, str]) -> list[Dataset]:
        """QIDO-RS at ``level`` (STUDY, SERIES or IMAGE) with ``keys`` as matching keys."""
        filters = {k: v for k, v in keys.items() if k not in ("StudyInstanceUID", "SeriesInstanceUID")}
        fields = [_tag(k) for k in QUERY_KEYS[level]]
        study, series = keys.get("StudyInstanceUID"), keys.get("SeriesInstanceUID")
        with self._talking(f"{level.lower()} query"):
            if level == "STUDY":
                found = self.client.search_for_studies(search_filters={**filters, **({"StudyInstanceUID": study}
                                                                                    if study else {})},
                                                       fields=fields, get_remaining=True)
            elif level == "SERIES":
                found = self.client.search_for_series(study_instance_uid=study, search_filters=filters or None,
                                                      fields=fields, get_remaining=True)
            else:
                found = self.client.search_for_instances(study_instance_uid=study, series_instance_uid=series,
                                                         search_filters=filters or None, fields=fields,
                                                         get_remaining=True)
        return [Dataset.from_json(item) for item in found]

    def retrieve_series(self, study_uid: str, series_uid: str, sop_classes: Sequence[str], folder: Path) -> list[str]:
        """WADO-RS the whole series into ``folder`` (one Part 10 file each); their SOP Instance UIDs.

        One multipart request for the series, asking for the instances as stored
        (``transfer-syntax=*``, so the node transcodes nothing); each part's bytes are written as
        they are (never decoded into a dataset and encoded again: that tripled the pull time) and
        named by the SOP Instance UID of its File Meta Information. A part that is not a DICOM
        Part 10 file is a PacsError.
        """
        folder.mkdir(parents=True, exist_ok=True)
        received = []
        url = f"{self.node.url.rstrip('/')}/studies/{study_uid}/series/{series_uid}"
        with self._talking("retrieve"):
            response = self.session.get(url, headers={"Accept": _RETRIEVE_ACCEPT}, stream=True,
                                        timeout=self.node.timeout_s)
            response.raise_for_status()
            # dicomweb-client's multipart decoder, fed the raw stream: parts as bytes.
            for index, part in enumerate(self.client._decode_multipart_message(response, stream=True)):
                partial = folder / f".part-{index}"
                partial.write_bytes(part)
                try:
                    uid = str(pydicom.filereader.read_file_meta_info(partial).MediaStorageSOPInstanceUID)
                except (pydicom.errors.InvalidDicomError, AttributeError, ValueError) as error:
                    raise PacsError(f"node {self.node.label} sent part {index + 1} of series {series_uid} that is "
                                    f"not a DICOM file ({type(error).__name__})") from error
                partial.rename(folder / instance_file_name(uid))
                received.append(uid)
        log.info("received %d instance(s) from %s", len(received), self.node.label)
        return received

    def series_headers(self, study_uid: str, series_uid: str) -> list[Dataset]:
        """The series' instances as headers, from WADO-RS series metadata (no pixel data is sent)."""
        with self._talking("metadata"):
            found = self.client.retrieve_series_metadata(study_uid, series_uid)
        pixels = _tag("PixelData")
        return [Dataset.from_json({k: v for k, v in item.items() if k != pixels}) for item in found]

    def store(self, datasets: Sequence[Dataset]) -> list[StoreOutcome]:
        """STOW-RS each dataset (one request each, so each has its own outcome)."""
        outcomes = []
        for ds in datasets:
            uid, sop_class = str(ds.SOPInstanceUID), str(ds.SOPClassUID)
            try:
                with self._talking("store"):
                    answer = self.client.store_instances([ds], study_instance_uid=str(ds.StudyInstanceUID))
            except PacsError as error:
                if "unreachable" in str(error):
                    raise
                outcomes.append(StoreOutcome(uid, sop_class, False, str(error)))
                continue
            failed = answer.get("FailedSOPSequence") or []
            ok = not failed and any(str(item.get("ReferencedSOPInstanceUID", "")) == uid
                                    for item in answer.get("ReferencedSOPSequence") or [])
            reason = "" if ok else f"failure reason {failed[0].get('FailureReason', '?')}" if failed else "not listed"
            outcomes.append(StoreOutcome(uid, sop_class, ok, reason))
        return outcomes
