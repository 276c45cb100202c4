/* With abi3, pyo3 links python3.dll into every Windows binary of the crate, test binaries too;
 * Wine has no CPython. This stand-in exports every name pyo3's python3.def lists (run.sh writes
 * the .def, aliasing each function to python_missing and each data symbol to python_data), so
 * the engine's test binaries load. Nothing the engine's tests run calls into Python: if something
 * does, it stops at once with a message rather than running on garbage. */
#include <stdio.h>
#include <stdlib.h>

void *python_data[64];

void python_missing(void) {
    fputs("python3.dll stub: a Python C-API function was called under Wine\n", stderr);
    abort();
}
