"""The one-intra-op-thread fixture the network test packages share: imported into a
package's conftest, it applies to that package (autouse, package scope)."""

import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """One intra-op thread: on the shared 2-core test machine, thread hand-offs in
    weight init and small forwards cost far more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
