// A bounded, thread-safe cache of large CPU output buffers for the diffcore:: CPU ops.
//
// A sampling loop calls the same ops with the same shapes every step. Through torch's CPU
// allocator (glibc malloc) a large output is often fresh memory each call: glibc serves
// blocks above its mmap threshold (up to 32 MB) with mmap and returns them on free, or trims
// the heap top, so every call page-faults its output in again (8192 faults and 33.5 MB of
// kernel zeroing for a (64, 128, 32, 32) float32 GroupNorm output) -- usually more time than
// the op's own pass over the data. This pool keeps freed output buffers of at least kMinBytes
// and hands them to the next request of the same size class, so steady-state calls write into
// memory that is already mapped.
//
// - Tensors come from at::detail::empty_strided_generic with this allocator: ordinary CPU
//   tensors (resizable storage; a resize allocates through the pool and frees the old block
//   into it; views, autograd, serialisation and freeing as usual). Smaller requests go to
//   torch's CPU allocator.
// - Bounded: at most DIFFCORE_CPU_POOL_MB MiB (default 256) of freed buffers are kept; a
//   release that would pass the bound evicts cached blocks (smallest first) or frees the
//   block. DIFFCORE_CPU_POOL_MB=0 switches the pool off (plain torch allocations).
// - New blocks of 2 MB or more are 2 MB aligned and advised MADV_HUGEPAGE (transparent huge
//   pages in "madvise" mode then fault them in 2 MB at a time); DIFFCORE_CPU_HUGEPAGES=0 turns
//   the advice off.
// - Thread-safe (one mutex; buffers are released from whichever thread frees the tensor).
//   The pool object is never destroyed, so tensors freed at interpreter exit stay safe.
// The environment is read once, at the first large allocation.
#pragma once

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>

#include <cstdlib>
#include <map>
#include <mutex>

#include "../common.h"

namespace diffcore {

class CpuOutputPool final : public c10::Allocator {
 public:
  static constexpr size_t kMinBytes = size_t(1) << 20;   // smaller: torch's CPU allocator
  static constexpr size_t kGranule = size_t(64) << 10;   // size classes: multiples of 64 KiB
  static constexpr size_t kHuge = size_t(2) << 20;

  static CpuOutputPool& get() {
    static CpuOutputPool* pool = new CpuOutputPool();   // never destroyed (see above)
    return *pool;
  }

  c10::DataPtr allocate(size_t n) override {
    if (cap_ == 0 || n < kMinBytes) return c10::GetCPUAllocator()->allocate(n);
    const size_t sz = (n + kGranule - 1) / kGranule * kGranule;
    void* p = take(sz);
    if (p == nullptr) p = fresh(sz);
    return {p, new Block{p, sz}, &release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  size_t cached_bytes() {
    std::lock_guard<std::mutex> g(mu_);
    return cached_;
  }

 private:
  struct Block {
    void* p;
    size_t n;
  };

  CpuOutputPool() {
    const char* mb = std::getenv("DIFFCORE_CPU_POOL_MB");
    cap_ = (mb != nullptr && *mb != '\0') ? static_cast<size_t>(std::strtoull(mb, nullptr, 10)) << 20 : size_t(256) << 20;
    const char* hp = std::getenv("DIFFCORE_CPU_HUGEPAGES");
    huge_ = !(hp != nullptr && std::strcmp(hp, "0") == 0);
  }

  static void release(void* ctx) {
    Block* b = static_cast<Block*>(ctx);
    get().put(b->p, b->n);
    delete b;
  }

  void* take(size_t n) {
    std::lock_guard<std::mutex> g(mu_);
    auto it = free_.find(n);
    if (it == free_.end()) return nullptr;
    void* p = it->second;
    free_.erase(it);
    cached_ -= n;
    return p;
  }

  void put(void* p, size_t n) {
    {
      std::lock_guard<std::mutex> g(mu_);
      if (n <= cap_) {
        while (cached_ + n > cap_ && !free_.empty()) {   // evict, smallest first
          auto it = free_.begin();
          std::free(it->second);
          cached_ -= it->first;
          free_.erase(it);
        }
        free_.emplace(n, p);
        cached_ += n;
        return;
      }
    }
    std::free(p);
  }

  void* fresh(size_t n) {
    void* p = nullptr;
    const size_t align = n >= kHuge ? kHuge : 64;
    TORCH_CHECK(posix_memalign(&p, align, n) == 0 && p != nullptr, "diffcore: out of memory allocating ", n,
                " bytes for an output");
    if (huge_ && n >= kHuge) (void)madvise(p, n / kHuge * kHuge, MADV_HUGEPAGE);   // advice only
    return p;
  }

  std::mutex mu_;
  std::multimap<size_t, void*> free_;   // size class -> cached blocks
  size_t cached_ = 0;
  size_t cap_ = 0;
  bool huge_ = true;
};

// An empty CPU tensor of these sizes and (dense) strides, its storage from the pool.
inline at::Tensor pooled_empty_strided(at::IntArrayRef sizes, at::IntArrayRef strides, at::ScalarType dtype) {
  return at::detail::empty_strided_generic(sizes, strides, &CpuOutputPool::get(),
                                           c10::DispatchKeySet(c10::DispatchKey::CPU), dtype);
}

// empty_like(x) for a dense x (same sizes, strides and dtype), its storage from the pool.
inline at::Tensor pooled_empty_like(const at::Tensor& x) {
  TORCH_CHECK(x.is_non_overlapping_and_dense(), "diffcore: internal: pooled_empty_like needs a dense tensor");
  return pooled_empty_strided(x.sizes(), x.strides(), x.scalar_type());
}

}  // namespace diffcore
