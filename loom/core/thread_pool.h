// One process-wide pool of worker threads for CPU kernels. Workers spin briefly after a job (decode
// launches many small jobs back to back) and then park on a condition variable. BLAS is never called
// from inside parallel_for; it runs on the calling thread with its own thread count.
#pragma once

#include <cstdint>
#include <functional>

namespace loom {

// Number of threads kernels use (workers + the calling thread). Default: hardware concurrency,
// overridable with LOOM_NUM_THREADS or set_num_threads().
int num_threads();
void set_num_threads(int n);

// Runs fn(begin, end) over [0, n) split into contiguous ranges across the pool; the calling thread
// takes a share. Ranges are at least `grain` long. Blocks until all ranges are done. Not reentrant:
// a nested call runs serially on the calling thread.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace loom
