"""A node's dcgm-exporter as a source: ``effmon attach --dcgm URL`` watches GPUs where effmon is not installed.

dcgm-exporter serves DCGM fields on a Prometheus endpoint, one sample per GPU labelled ``gpu``, ``UUID``,
``modelName``, ``Hostname`` (and ``pci_bus_id``, ``device``, pod labels ...). This source reads that text with
prometheus_client's parser and fills the same GPU entities NVML fills, in effmon's units (bytes, %, J), so every
metric (AMU, PCU, AEC ...) works unchanged. Fields the exporter was not configured to serve read N/A with the
reason; profiling fields (``DCGM_FI_PROF_*``, ratios 0-1) become the GPM activity percentages.
"""

from __future__ import annotations

from typing import Any

from effmon.core.declare import Row
from effmon.core.scrape import fetch_text, split_credentials
from effmon.core.source import SourceInfo, SourceOptions, SourceUnavailable

MIB = 1024 * 1024

GPU_FIELDS: dict[str, tuple[str, float]] = {
    # dcgm-exporter field -> (effmon's gpu column, scale into effmon's unit)
    "DCGM_FI_DEV_FB_USED": ("mem_used_bytes", MIB),
    "DCGM_FI_DEV_GPU_UTIL": ("util_gpu_pct", 1.0),
    "DCGM_FI_DEV_MEM_COPY_UTIL": ("util_mem_pct", 1.0),
    "DCGM_FI_DEV_POWER_USAGE": ("power_w", 1.0),
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": ("power_limit_w", 1.0),
    "DCGM_FI_DEV_SM_CLOCK": ("sm_clock_mhz", 1.0),
    "DCGM_FI_DEV_MEM_CLOCK": ("mem_clock_mhz", 1.0),
    "DCGM_FI_DEV_GPU_TEMP": ("temp_c", 1.0),
}
GPM_FIELDS: dict[str, str] = {
    "DCGM_FI_PROF_SM_ACTIVE": "sm_active_pct",
    "DCGM_FI_PROF_SM_OCCUPANCY": "sm_occupancy_pct",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": "tensor_active_pct",
    "DCGM_FI_PROF_DRAM_ACTIVE": "dram_bw_pct",
}
ENERGY_FIELD = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"  # mJ since boot, a counter
FREE_FIELD = "DCGM_FI_DEV_FB_FREE"  # with FB_USED: the total (dcgm-exporter serves no total by default)


def parse(text: str) -> dict[int, dict[str, Any]]:
    """Per GPU index: every DCGM field's value and the GPU's labels (``_labels``). Raises ValueError for text
    that is not Prometheus exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    gpus: dict[int, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")
            if not name.startswith("DCGM_FI_"):
                continue
            try:
                index = int(sample.labels.get("gpu", ""))
            except ValueError:
                continue  # a per-node field, or a MIG instance without a GPU index
            gpu = gpus.setdefault(index, {"_labels": sample.labels})
            gpu[name] = sample.value
    return gpus


def rows_from(gpus: dict[int, dict[str, Any]], now: float) -> list[Row]:
    rows: list[Row] = []
    for index, fields in sorted(gpus.items()):
        gpu: dict[str, Any] = {"t": now, "gpu": index}
        for field, (column, scale) in GPU_FIELDS.items():
            if fields.get(field) is not None:
                gpu[column] = fields[field] * scale
        if fields.get(FREE_FIELD) is not None and fields.get("DCGM_FI_DEV_FB_USED") is not None:
            gpu["mem_total_bytes"] = (fields[FREE_FIELD] + fields["DCGM_FI_DEV_FB_USED"]) * MIB
        for key in ("mem_used_bytes", "mem_total_bytes"):
            if key in gpu:
                gpu[key] = int(gpu[key])
        rows.append(Row("gpu", gpu))
        gpm = {column: fields[field] * 100.0 for field, column in GPM_FIELDS.items() if fields.get(field) is not None}
        if gpm:
            rows.append(Row("gpu_gpm", {"t": now, "gpu": index, **gpm}))
        if fields.get(ENERGY_FIELD) is not None:
            rows.append(Row("gpu_energy", {"t": now, "gpu": index, "energy_counter_j": fields[ENERGY_FIELD] / 1e3}))
    return rows


class DcgmSource:
    """Scrapes one dcgm-exporter endpoint each second (its own default collection interval is 30 s; set
    ``-c 1000`` there for one reading a second)."""

    name = "dcgm"

    def __init__(self, options: SourceOptions):
        self.url, self.headers = split_credentials(options.dcgm_url or "")
        self.channels = {"scrape": 1.0}

    def _read(self) -> dict[int, dict[str, Any]]:
        try:
            return parse(fetch_text(self.url, self.headers))
        except ValueError as exc:
            raise ConnectionError(f"{self.url} does not serve Prometheus text ({exc})") from None

    def open(self) -> SourceInfo:
        if not self.url:
            raise SourceUnavailable("no --dcgm URL given")
        try:
            gpus = self._read()
        except ConnectionError as exc:
            hint = "is dcgm-exporter running there? (its metrics are at :9400/metrics)"
            raise SourceUnavailable(f"{exc}; {hint}") from None
        if not gpus:
            raise SourceUnavailable(f"{self.url} serves no DCGM_FI_* fields with a gpu label: is it dcgm-exporter?")
        info = SourceInfo(meta={"dcgm_url": self.url})
        for index, fields in sorted(gpus.items()):
            labels = fields["_labels"]
            info.gpus.append(
                {
                    "index": index,
                    "name": labels.get("modelName"),
                    "uuid": labels.get("UUID"),
                    "host": labels.get("Hostname"),
                    "energy_counter": ENERGY_FIELD in fields,
                    "gpm": any(f in fields for f in GPM_FIELDS),
                }  # fmt: skip
            )
            for field, (column, _) in GPU_FIELDS.items():
                if field not in fields:
                    info.unsupported[f"gpu.{column}@{index}"] = f"the exporter does not serve {field}"
            if ENERGY_FIELD not in fields:
                info.unsupported[f"gpu_energy.energy_counter_j@{index}"] = f"the exporter does not serve {ENERGY_FIELD}"
        return info

    def read(self, channel: str, now: float) -> list[Row]:
        return rows_from(self._read(), now)

    def close(self) -> None:
        pass
