"""MetadataLimitsV1 (layout.md §5.2): the bounds every footer metadata object keeps."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["LIMITS"]

LIMITS: Mapping[str, int] = {
    "footer_json_bytes": 65_536,
    "metadata_datasets": 256,
    "dataset_attrs": 64,
    "attr_string_bytes": 1024,
    "dim_names": 8,
    "coord_axes": 8,
    "coord_labels_per_axis": 64,
    "history_events": 4096,
    "history_parents": 16,
    "history_params": 32,
    "metadata_blob_bytes": 16 * 1024 * 1024,
}
