// dcg::DeviceArena: sub-allocates loaded deltas from large device chunks (host-only C++17, no CUDA
// or HIP headers: the allocator is unit-tested on CPU-only machines with a fake chunk allocator).
//
// Why: the CUDA allocator rounds every cudaMalloc up to its own granularity (2 MiB pages, and larger
// classes above that). One allocation per delta turned a 2.54 MB 4096×4096 delta into 4 MiB and a
// 6.79 MB 11008×4096 one into 8 MiB — about 37 % of a variant's device memory was rounding, so the
// delta pool fitted ~50 Llama-2-7B variants on an 80 GB GPU instead of ~70 (docs/POOL.md). Carving
// deltas out of 64 MiB chunks leaves at most 255 bytes of padding per delta plus the unused tail of
// the chunks, and the size it reports for an allocation is the memory that allocation really holds.
//
// Rules:
//   - every allocation is a multiple of kAlign (256) bytes at a kAlign-aligned address (the
//     kernels' vector loads need 16; 256 matches cudaMalloc's own guarantee). chunk_alloc must return
//     kAlign-aligned memory (cudaMalloc and hipMalloc do); a chunk that is not is given back.
//   - a request of at most kChunkBytes comes from a shared chunk, best fit over the free ranges
//     (smallest range that fits, lowest address among equals), so partly used chunks fill up before
//     an empty one is touched;
//   - a larger request gets a chunk of its own, its size rounded up to 2 MiB (what the device
//     allocator would take for it anyway); the whole chunk is the allocation's size, and the chunk
//     goes back as soon as the allocation is freed;
//   - freed ranges merge with free neighbours of the same chunk (never across chunks, even when
//     chunk_alloc hands out adjacent addresses); a shared chunk that becomes entirely free is given
//     back, except that one empty chunk stays cached so that a pool evicting and loading variants
//     does not pay a cudaFree (which synchronises the device) and a cudaMalloc per turn.
//
// Thread-safe: every member function takes one mutex, and the callbacks run under it, so they must
// not call back into the arena. Host out of memory (std::bad_alloc in the bookkeeping) makes alloc
// return nullptr and free return false; a range is always taken out of one index before it enters
// the other, so such a failure can lose track of free space but never hands a range out twice. Freeing an allocation does not wait for the device: the caller
// guarantees that no enqueued work still reads or writes it (as with dc_delta_free).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <new>
#include <set>
#include <unordered_map>
#include <utility>

namespace dcg {

class DeviceArena {
 public:
  static constexpr size_t kAlign = 256;
  static constexpr size_t kChunkBytes = size_t{64} << 20;
  static constexpr size_t kLargeGranularity = size_t{2} << 20;  // own-chunk sizes round up to this
  static constexpr size_t kMaxCachedEmptyChunks = 1;

  using ChunkAlloc = std::function<void*(size_t bytes)>;  // nullptr on failure
  using ChunkFree = std::function<void(void* chunk)>;

  DeviceArena(ChunkAlloc chunk_alloc, ChunkFree chunk_free)
      : chunk_alloc_(std::move(chunk_alloc)), chunk_free_(std::move(chunk_free)) {}
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;

  // Gives every chunk back, live allocations included (the device is being closed).
  ~DeviceArena() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& c : chunks_) chunk_free_(reinterpret_cast<void*>(c.first));
  }

  // Returns nullptr when the size overflows or chunk_alloc fails (the arena stays usable). A request
  // of 0 bytes takes kAlign, so that nullptr always means failure. *out_size (if given) receives the
  // bytes the allocation holds: bytes rounded up to kAlign, or its whole chunk for a large request.
  void* alloc(size_t bytes, size_t* out_size = nullptr) {
    if (out_size) *out_size = 0;
    size_t size = 0;
    if (!round_up(bytes ? bytes : 1, kAlign, &size)) return nullptr;
    std::lock_guard<std::mutex> lock(mu_);
    try {
      return alloc_locked(size, out_size);
    } catch (const std::bad_alloc&) {  // host out of memory (see bookkeeping below); callers are C entry points
      return nullptr;
    }
  }

  // Returns the allocation's range to its chunk. nullptr: no-op (true). A pointer that is not a live
  // allocation of this arena (never returned, or already freed) is ignored and gives false.
  bool free(void* p) {
    if (!p) return true;
    std::lock_guard<std::mutex> lock(mu_);
    try {
      return free_locked(reinterpret_cast<uintptr_t>(p));
    } catch (const std::bad_alloc&) {
      return false;
    }
  }

  // Gives back the cached empty chunks (device memory for something other than deltas).
  void trim() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = chunks_.begin(); it != chunks_.end();) {
      const uintptr_t base = it->first;
      const Chunk c = it->second;
      ++it;
      if (c.used == 0 && !c.dedicated) {
        erase_free(base, c.size);
        release_chunk(base);
        --empty_chunks_;
      }
    }
  }

  // Σ sizes of live allocations (as reported through alloc's out_size).
  size_t bytes_in_use() const {
    std::lock_guard<std::mutex> lock(mu_);
    return in_use_;
  }
  // Σ sizes of the chunks held (the device memory the arena occupies), the cached empty one included.
  size_t bytes_reserved() const {
    std::lock_guard<std::mutex> lock(mu_);
    return reserved_;
  }
  size_t chunk_count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return chunks_.size();
  }
  size_t free_range_count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return free_by_addr_.size();
  }

 private:
  struct Chunk {
    size_t size = 0, used = 0;
    bool dedicated = false;  // holds exactly one large allocation
  };
  struct FreeRange {
    size_t size;
    uintptr_t chunk;
  };
  struct Live {
    size_t size;
    uintptr_t chunk;
  };

  void* alloc_locked(size_t size, size_t* out_size) {
    uintptr_t addr = 0, chunk = 0;
    if (size > kChunkBytes) {
      if (!round_up(size, kLargeGranularity, &size)) return nullptr;
      chunk = new_chunk(size, /*dedicated=*/true);
      if (!chunk) return nullptr;
      addr = chunk;
    } else {
      auto it = free_by_size_.lower_bound({size, 0});
      if (it == free_by_size_.end()) {
        if (!new_chunk(kChunkBytes, /*dedicated=*/false)) return nullptr;
        it = free_by_size_.lower_bound({size, 0});
      }
      addr = it->second;
      const FreeRange range = free_by_addr_.at(addr);
      chunk = range.chunk;
      erase_free(addr, range.size);
      if (range.size > size) insert_free(addr + size, range.size - size, chunk);
    }
    live_.emplace(addr, Live{size, chunk});
    Chunk& c = chunks_.at(chunk);
    if (c.used == 0 && !c.dedicated) --empty_chunks_;
    c.used += size;
    in_use_ += size;
    if (out_size) *out_size = size;
    return reinterpret_cast<void*>(addr);
  }

  bool free_locked(uintptr_t addr) {
    const auto it = live_.find(addr);
    if (it == live_.end()) return false;
    size_t size = it->second.size;
    const uintptr_t chunk = it->second.chunk;
    Chunk& c = chunks_.at(chunk);
    if (c.dedicated) {
      live_.erase(it);
      in_use_ -= size;
      release_chunk(chunk);
      return true;
    }
    // Merge with the free neighbours that belong to the same chunk.
    uintptr_t begin = addr;
    const auto next = free_by_addr_.find(addr + size);
    if (next != free_by_addr_.end() && next->second.chunk == chunk) {
      const size_t next_size = next->second.size;
      erase_free(addr + size, next_size);
      size += next_size;
    }
    auto prev = free_by_addr_.lower_bound(addr);
    if (prev != free_by_addr_.begin()) {
      --prev;
      if (prev->second.chunk == chunk && prev->first + prev->second.size == addr) {
        const uintptr_t prev_addr = prev->first;
        const size_t prev_size = prev->second.size;
        erase_free(prev_addr, prev_size);
        begin = prev_addr;
        size += prev_size;
      }
    }
    in_use_ -= it->second.size;
    c.used -= it->second.size;
    live_.erase(it);
    insert_free(begin, size, chunk);
    if (c.used == 0) {
      if (empty_chunks_ < kMaxCachedEmptyChunks) {
        ++empty_chunks_;
      } else {
        erase_free(chunk, c.size);
        release_chunk(chunk);
      }
    }
    return true;
  }

  static bool round_up(size_t v, size_t to, size_t* out) {
    if (v > SIZE_MAX - (to - 1)) return false;
    *out = (v + to - 1) / to * to;
    return true;
  }

  // Adds a chunk (and, if shared, its whole range as free). Returns its base, or 0 on failure.
  uintptr_t new_chunk(size_t size, bool dedicated) {
    void* p = chunk_alloc_(size);
    if (!p) return 0;
    const uintptr_t base = reinterpret_cast<uintptr_t>(p);
    if (base % kAlign != 0) {
      chunk_free_(p);
      return 0;
    }
    try {
      chunks_.emplace(base, Chunk{size, 0, dedicated});
    } catch (...) {
      chunk_free_(p);
      throw;
    }
    reserved_ += size;
    if (!dedicated) {
      insert_free(base, size, base);
      ++empty_chunks_;
    }
    return base;
  }

  void release_chunk(uintptr_t base) {
    reserved_ -= chunks_.at(base).size;
    chunks_.erase(base);
    chunk_free_(reinterpret_cast<void*>(base));
  }

  // All or nothing: a range is in both free indexes or in neither.
  void insert_free(uintptr_t addr, size_t size, uintptr_t chunk) {
    free_by_addr_.emplace(addr, FreeRange{size, chunk});
    try {
      free_by_size_.emplace(size, addr);
    } catch (...) {
      free_by_addr_.erase(addr);
      throw;
    }
  }
  void erase_free(uintptr_t addr, size_t size) {
    free_by_addr_.erase(addr);
    free_by_size_.erase({size, addr});
  }

  ChunkAlloc chunk_alloc_;
  ChunkFree chunk_free_;
  mutable std::mutex mu_;
  std::map<uintptr_t, Chunk> chunks_;                   // by base address
  std::map<uintptr_t, FreeRange> free_by_addr_;         // for merging with neighbours
  std::set<std::pair<size_t, uintptr_t>> free_by_size_;  // (size, address): best fit
  std::unordered_map<uintptr_t, Live> live_;
  size_t in_use_ = 0, reserved_ = 0;
  size_t empty_chunks_ = 0;  // shared chunks with nothing allocated (held as a cache)
};

}  // namespace dcg
