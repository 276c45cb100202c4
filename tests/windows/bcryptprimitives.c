/* Wine 8.0 lacks bcryptprimitives.dll, from which Rust's std imports ProcessPrng (its random
 * source since Rust 1.78). This stand-in forwards to RtlGenRandom (advapi32's SystemFunction036),
 * which Wine has. Only for running softcopy's Windows test binaries under Wine: real Windows has
 * the real DLL. Built by tests/windows/run.sh with mingw. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG step = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, step)) {
            return FALSE;
        }
        data += step;
        len -= step;
    }
    return TRUE;
}
