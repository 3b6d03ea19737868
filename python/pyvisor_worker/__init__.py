"""Worker side of pyvisor: runs Python calls for a supervising Rust host.

The host starts ``python -m pyvisor_worker`` with two pipe fds and a few environment variables;
see ``docs/protocol.md`` in the pyvisor repository for the wire protocol.
"""

from .protocol import PROTOCOL_VERSION

__version__ = "0.1.0"

__all__ = ["PROTOCOL_VERSION", "__version__"]
