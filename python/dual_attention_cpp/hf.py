"""The language models with the checkpoint interface of huggingface_hub's PyTorchModelHubMixin
(reference: ``dual_attention.hf``): ``from_pretrained`` / ``save_pretrained`` of folders holding
``config.json`` and ``model.safetensors``. Every model class of the package has both; these names
exist so that code importing them runs unchanged. Also the errors ``from_pretrained`` raises when a
Hub download fails (HubError and its subclasses)."""

from typing import Optional

from .language_models import DualAttnTransformerLM, TransformerLM

__all__ = [
    "DualAttnTransformerLM_HFHub",
    "TransformerLM_HFHub",
    "HubError",
    "RepositoryNotFoundError",
    "RevisionNotFoundError",
    "EntryNotFoundError",
    "UnauthorizedError",
    "GatedRepoError",
    "LocalEntryNotFoundError",
    "NetworkError",
    "DiskFullError",
    "ConsistencyError",
    "FileMetadataError",
    "HttpError",
]


class DualAttnTransformerLM_HFHub(DualAttnTransformerLM):
    __doc__ = DualAttnTransformerLM.__doc__


class TransformerLM_HFHub(TransformerLM):
    __doc__ = TransformerLM.__doc__


# ---- errors of the Hub client, raised by from_pretrained(repo_id) ----
# Named and arranged as huggingface_hub's; OSError subclasses as those are. (huggingface_hub's own
# classes cannot be raised here: their constructors need an HTTP response object.)


class HubError(OSError):
    """A download from the Hugging Face Hub failed: the message, the repository, the file within it
    and the revision asked for."""

    repo_id: str
    filename: str
    revision: str

    def __init__(
        self, message: str, repo_id: str = "", filename: str = "", revision: str = ""
    ) -> None:
        super().__init__(message)
        self.repo_id = repo_id
        self.filename = filename
        self.revision = revision

    def __str__(self) -> str:  # OSError's would print "[Errno None] ..." once filename is set
        return str(self.args[0]) if self.args else ""


class RepositoryNotFoundError(HubError):
    """The repository does not exist, or is private and the token does not reach it."""


class RevisionNotFoundError(HubError):
    """The branch, tag or commit does not exist in the repository."""


class EntryNotFoundError(HubError):
    """The file does not exist at that revision."""


class UnauthorizedError(HubError):
    """401 / 403: a valid token with access to the repository is needed."""


class GatedRepoError(UnauthorizedError):
    """The repository is gated and the token (if any) has not been granted access."""


class LocalEntryNotFoundError(HubError):
    """Offline (HF_HUB_OFFLINE or local_files_only) and the file is not in the cache."""


class NetworkError(HubError):
    """The Hub could not be reached, or a transfer broke and could not be resumed."""


class DiskFullError(HubError):
    """No space left, or the file size limit was hit, while writing the cache."""


class ConsistencyError(HubError):
    """The downloaded bytes do not match the announced size or sha256."""


class FileMetadataError(HubError):
    """The server's answer lacks X-Repo-Commit or an ETag: HF_ENDPOINT is not a Hub."""


class HttpError(HubError):
    """Any other HTTP error status (5xx, 400, 429, ...), in `status`."""

    status: Optional[int]

    def __init__(
        self,
        message: str,
        repo_id: str = "",
        filename: str = "",
        revision: str = "",
        status: Optional[int] = None,
    ) -> None:
        super().__init__(message, repo_id, filename, revision)
        self.status = status
