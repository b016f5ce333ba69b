"""Catalog and install errors: each has a stable code and the HTTP status the router answers with."""

from __future__ import annotations

from ..errors import MinervaError


class CatalogError(MinervaError):
    code = "catalog_error"
    status = 500


class DownloadsDisabledError(CatalogError):
    code = "downloads_disabled"
    status = 403


class SourceUnreachableError(CatalogError):
    """An index could not be fetched (no network, a wrong --catalog-url, an answer that is not an index)."""

    code = "catalog_unreachable"
    status = 502


class NotInCatalogError(CatalogError):
    code = "not_in_catalog"
    status = 404


class NotInstalledError(CatalogError):
    code = "not_installed"
    status = 404


class JobNotFoundError(CatalogError):
    code = "job_not_found"
    status = 404


class AlreadyInstalledError(CatalogError):
    code = "already_installed"
    status = 409


class InUseError(CatalogError):
    code = "model_in_use"
    status = 409


class DefaultModelError(CatalogError):
    code = "model_is_default"
    status = 409


class NotRemovableError(CatalogError):
    code = "not_removable"
    status = 409


class InsufficientStorageError(CatalogError):
    code = "insufficient_storage"
    status = 507


class NoDataDirError(CatalogError):
    code = "no_data_dir"
    status = 409


# ---- errors of a running job (reported on its event stream) -------------------------------------


class DownloadError(CatalogError):
    """The network failed: the partial file stays, and installing again resumes it."""

    code = "network_error"
    status = 502


class RemoteStatusError(DownloadError):
    code = "download_failed"


class IntegrityError(CatalogError):
    """The bytes are not the catalog's: nothing is kept."""

    code = "size_mismatch"
    status = 502


class HashMismatchError(IntegrityError):
    code = "hash_mismatch"


class CancelledJobError(CatalogError):
    code = "cancelled"
    status = 499
