/* A stand-in for the NVIDIA driver's libcuda.so.1 on a machine without one (tests/test_engine_image.py).
 * sgl_kernel's libraries link libcuda.so.1 (readelf -d), so `import sglang` loads a library of that name,
 * though the contract tests never call into it; on a GPU host the NVIDIA container toolkit mounts the driver's.
 * Each driver entry point that sgl_kernel 0.4.2 imports (nm -D --undefined-only) answers
 * CUDA_ERROR_NO_DEVICE (100), as the driver does where there is no GPU.
 * Build: cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o libcuda.so.1 libcuda_stub.c */
#define NO_DEVICE 100
int cuCtxFromGreenCtx(void) { return NO_DEVICE; }
int cuCtxPopCurrent_v2(void) { return NO_DEVICE; }
int cuCtxPushCurrent_v2(void) { return NO_DEVICE; }
int cuDevResourceGenerateDesc(void) { return NO_DEVICE; }
int cuDevSmResourceSplitByCount(void) { return NO_DEVICE; }
int cuDeviceGetDevResource(void) { return NO_DEVICE; }
int cuDriverGetVersion(void) { return NO_DEVICE; }
int cuGetErrorString(void) { return NO_DEVICE; }
int cuGetProcAddress_v2(void) { return NO_DEVICE; }
int cuGreenCtxCreate(void) { return NO_DEVICE; }
int cuGreenCtxDestroy(void) { return NO_DEVICE; }
int cuGreenCtxGetDevResource(void) { return NO_DEVICE; }
int cuMemAddressFree(void) { return NO_DEVICE; }
int cuMemGetAddressRange_v2(void) { return NO_DEVICE; }
int cuMemRelease(void) { return NO_DEVICE; }
int cuMemRetainAllocationHandle(void) { return NO_DEVICE; }
int cuMemSetAccess(void) { return NO_DEVICE; }
int cuMemUnmap(void) { return NO_DEVICE; }
int cuPointerGetAttribute(void) { return NO_DEVICE; }
int cuStreamCreate(void) { return NO_DEVICE; }
