// The CUDA runtime: uploads and downloads (strided views included), the caching allocator's stats,
// and clear errors for devices that do not exist.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "loom/common/error.h"
#include "loom/core/allocator.h"
#include "loom/ops/ops.h"
#include "tests/cuda/parity.h"

namespace loom {
namespace {

using test::kGpu;
using test::on_cpu;
using test::on_gpu;

TEST(CudaRuntime, UploadDownloadRoundTripsEveryDtype) {
  LOOM_REQUIRE_CUDA();
  for (Dtype dt : {Dtype::f32, Dtype::bf16, Dtype::f16, Dtype::i32, Dtype::i64, Dtype::u8, Dtype::bool_}) {
    SCOPED_TRACE(std::string(name(dt)));
    Array a = Array::from(std::vector<float>{1, 2, 3, 0, 7, 8}, {2, 3}, dt);
    Array g = to_device(a, kGpu);
    EXPECT_EQ(g.device(), kGpu);
    EXPECT_EQ(g.dtype(), dt);
    EXPECT_EQ(g.to_vector<double>(), a.to_vector<double>());
    Array back = to_device(g, Device::cpu());
    EXPECT_TRUE(back.device().is_cpu());
    EXPECT_EQ(back.to_vector<double>(), a.to_vector<double>());
  }
}

TEST(CudaRuntime, StridedDeviceViewsReadBackInLogicalOrder) {
  LOOM_REQUIRE_CUDA();
  Array a = test::rand_array({4, 5, 6}, 1);
  Array views[] = {transpose(a, {2, 0, 1}), slice(a, {1, 0, 2}, {4, 5, 6}, {2, 2, 3}), broadcast_to(slice_axis(a, 0, 1, 2), {3, 5, 6})};
  for (const Array& v : views) {
    Array g = on_gpu(v);
    EXPECT_EQ(g.to_vector<float>(), v.to_vector<float>()) << shape_str(v.shape());
    EXPECT_EQ(on_cpu(g).to_vector<float>(), v.to_vector<float>());
  }
}

TEST(CudaRuntime, CachingAllocatorReusesBlocks) {
  LOOM_REQUIRE_CUDA();
  { Array warm = Array::empty({1000, 37}, Dtype::f32, kGpu); }
  AllocatorStats before = allocator::stats(kGpu);
  for (int i = 0; i < 100; ++i) {
    Array x = Array::empty({1000, 37}, Dtype::f32, kGpu);
    Array y = Array::empty({1000, 37}, Dtype::f32, kGpu);
  }
  AllocatorStats after = allocator::stats(kGpu);
  EXPECT_LE(after.system_allocs, before.system_allocs + 1);  // the second block of a pair, once
  EXPECT_EQ(after.active_bytes, before.active_bytes);
  EXPECT_GE(after.allocs, before.allocs + 200);
  allocator::clear_cache(kGpu);
  EXPECT_EQ(allocator::stats(kGpu).cached_bytes, 0u);
}

TEST(CudaRuntime, OutOfMemoryIsAClearError) {
  LOOM_REQUIRE_CUDA();
  size_t free_b = 0, total_b = 0;
  device_memory(kGpu, free_b, total_b);
  try {
    Array huge = Array::empty({static_cast<int64_t>(total_b / 4 * 2)}, Dtype::f32, kGpu);  // 2x the card
    FAIL() << "allocated more than the device holds";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of memory"), std::string::npos) << e.what();
  }
  Array ok = Array::empty({1024}, Dtype::f32, kGpu);  // the runtime is still usable
  EXPECT_EQ(ok.device(), kGpu);
}

TEST(CudaRuntime, MissingDeviceIsAClearError) {
  LOOM_REQUIRE_CUDA();
  EXPECT_FALSE(device_available(Device::cuda(97)));
  try {
    Array a = Array::empty({4}, Dtype::f32, Device::cuda(97));
    FAIL() << "allocated on a device that does not exist";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:97"), std::string::npos) << e.what();
  }
}

TEST(CudaRuntime, MixedDevicesNeedSmallHostOperands) {
  LOOM_REQUIRE_CUDA();
  Array g = on_gpu(test::rand_array({3, 4}, 2));
  // A weak scalar and a small host array join a device op (uploaded)...
  Array r = g * 2.0;
  EXPECT_EQ(r.device(), kGpu);
  Array h = test::rand_array({4}, 3);
  EXPECT_EQ(add(g, h).device(), kGpu);
  // ...but a large host operand is an error naming both devices.
  Array big = test::rand_array({1, 1 << 17}, 4);
  Array gbig = on_gpu(test::rand_array({1, 1 << 17}, 5));
  try {
    add(gbig, big);
    FAIL() << "mixed a large host array into a device op";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("different devices"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace loom
