"""Stage 2: the proxies HDF5 file that every stage reads and adds to.

- :mod:`pseudolabel.store.layout` -- the file format: constants, dataset layout, the pieces a pair is
  written from;
- :mod:`pseudolabel.store.proxies` -- the file as an object (:class:`ProxyFile`, :func:`open_proxies`);
- :mod:`pseudolabel.store.names` -- key names (:func:`key_to_name`), the files next to an output, the
  image files a pair names;
- :mod:`pseudolabel.store.datasets_io` -- HDF5 plumbing: opening files, attribute values, chunked and
  compressed dataset writing;
- :mod:`pseudolabel.store.journal` -- crash-safe writing: the output lock, the per-pair journal of a
  running ``sgm`` (:class:`ProxyRun`), and in-place edits (:func:`edit_proxies`);
- :mod:`pseudolabel.store.inspect` -- the report ``pseudolabel inspect`` prints (:func:`describe_proxies`);
- :mod:`pseudolabel.store.export` -- ``pseudolabel export``: labels in KITTI / PFM / NPZ layouts for other
  training code (:func:`~pseudolabel.store.export.export_labels`);
- :mod:`pseudolabel.store.external` -- ``pseudolabel import``: another matcher's dense disparities as a
  proxies file (:func:`~pseudolabel.store.external.import_disparities`).

The contract is in ``data/README.md``. Only h5py and numpy are imported here: never torch.
"""

from pseudolabel.store.inspect import describe_proxies
from pseudolabel.store.journal import ProxyRun, create_or_open_proxies, edit_proxies, output_lock
from pseudolabel.store.names import key_to_name, name_to_key
from pseudolabel.store.proxies import ProxyFile, open_proxies

__all__ = [
    "ProxyFile",
    "ProxyRun",
    "create_or_open_proxies",
    "describe_proxies",
    "edit_proxies",
    "key_to_name",
    "name_to_key",
    "open_proxies",
    "output_lock",
]
