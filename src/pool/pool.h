// The delta pool behind include/deltacome/dc_pool.h: registry of variants, entries keyed by
// (model, tensor), reference counts, the LRU list of evictable deltas, the budget, host decode
// threads for prefetch, and the batch/row-slot caches of dc_pool_apply_batched.
//
// Locking: one mutex (mu_) guards everything below it. Decoding (zstd + XXH3, the slow part of a
// load) runs with mu_ released, by a host worker (prefetch) or by the acquiring thread (a miss);
// an entry being decoded is marked `decoding` and waiters sleep on cv_. Everything that uses the
// context (placing, freeing, applying) runs with mu_ held, so the pool's own context use is
// serialised. Entries are looked up again after every wait: unregister may have erased them.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "api/api_internal.h"
#include "common/packed_tensor.h"
#include "deltacome/dc_pool.h"
#include "pool/device_memory.h"

namespace dc {
namespace pool {

class Pool {
 public:
  Pool(dc_context* ctx, const dc_pool_options& opts);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  void register_model(const std::string& id, const dc_container* c);
  void unregister_model(const std::string& id);
  const dc_delta* acquire(const std::string& id, const std::string& tensor, void* stream);
  void release(const dc_delta* d);
  void prefetch(const std::string& id, const char* tensor /* null = all */, void* stream);
  void wait();
  void query(const std::string& id, const std::string& tensor, dc_pool_entry_state* state, uint32_t* refs);
  dc_pool_stats stats();
  void apply_batched(const std::string& tensor, const char* const* ids, const dc_apply_params& p);

 private:
  struct Entry {
    uint32_t model = 0;
    uint64_t tensor = 0;
    dc_pool_entry_state state = DC_POOL_ABSENT;
    bool started = false;             // decoding: a thread has taken the job
    void* stream = nullptr;           // upload stream of a prefetch
    std::unique_ptr<PackedTensor> decoded;
    std::exception_ptr error;         // decode failure, reported by the next acquire/wait
    dc_delta* delta = nullptr;        // resident
    uint64_t bytes = 0;               // resident: device_bytes
    uint64_t packed = 0;              // packed bytes from the manifest
    uint64_t actual = 0;              // device_bytes of the last load (0: never loaded)
    uint32_t refs = 0;
    bool in_lru = false;
    std::list<Entry*>::iterator lru;
  };
  using Key = std::pair<uint32_t, uint64_t>;  // (model index, tensor index)
  struct Model {
    std::string id;
    const dc_container* container = nullptr;
    bool live = false;
  };
  struct CachedBatch {
    std::vector<const dc_delta*> members;  // slot order
    dc_delta_batch* batch = nullptr;
    uint64_t last_use = 0;
  };

  using Lock = std::unique_lock<std::mutex>;

  // Registry lookups (mu_ held). Throw DC_ERR_NOT_FOUND.
  uint32_t model_index(const std::string& id) const;
  uint64_t tensor_index(uint32_t model, const std::string& tensor) const;
  Entry& entry(uint32_t model, uint64_t tensor);
  Entry* find_entry(const Key& k);

  // Makes (model, tensor) resident and takes a reference, counting a hit or miss. May release mu_
  // while decoding. Uses the context on a miss.
  Entry& acquire_locked(Lock& lk, uint32_t model, uint64_t tensor, void* stream);
  void take_ref(Entry& e);
  void release_locked(Entry& e);
  // Decodes e with mu_ released (e must be DECODING); leaves it DECODED, with `error` on failure.
  void decode_here(Lock& lk, Entry& e);
  void set_state(Entry& e, dc_pool_entry_state s);  // keeps n_decoding_/n_decoded_ right
  // Places e->decoded (mu_ held). Returns false (prefetch) or throws DC_ERR_BUDGET (acquire) when it
  // does not fit.
  bool place_locked(Entry& e, void* stream, bool for_prefetch);
  // Evicts LRU deltas until `need` more bytes fit; false (nothing evicted) if impossible.
  bool make_room(uint64_t need);
  void evict(Entry& e);
  void free_resident(Entry& e);  // frees e's delta and the cached batches that contain it
  void drain_prefetched();       // places every decoded prefetch (mu_ held)
  void sync_device();            // device idle; frees retired batches
  void retire(dc_delta_batch* b);

  void worker_loop();

  dc_context* ctx_;
  dc_pool_options opts_;
  std::unique_ptr<DeviceMemory> mem_;

  std::mutex mu_;
  std::condition_variable cv_;       // an entry left the decoding state, or the queue changed
  std::vector<Model> models_;        // index = model number; unregistered slots stay, not live
  std::unordered_map<std::string, uint32_t> model_ids_;
  std::map<Key, std::unique_ptr<Entry>> entries_;
  std::unordered_map<const dc_delta*, Entry*> by_delta_;
  std::list<Entry*> lru_;            // unreferenced resident entries, least recently used first
  uint64_t resident_bytes_ = 0, evictable_bytes_ = 0;
  uint64_t overhead_ = 0;            // largest device_bytes − packed seen: backend bookkeeping/padding
  std::deque<Key> queue_;            // prefetch jobs
  std::deque<Key> ready_;            // decoded by a worker, to be placed by drain_prefetched()
  uint64_t n_decoding_ = 0, n_decoded_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;

  // dc_pool_apply_batched caches. Per tensor name: recent batches, and the entries that served the
  // last id sequence (valid while registry_gen_ and ids_version_ are unchanged: entries are only
  // erased by unregister, which bumps registry_gen_), so a repeated decode step resolves its ids
  // without a lookup.
  struct TensorState {
    std::vector<CachedBatch> batches;
    uint64_t gen = UINT64_MAX, ids_version = UINT64_MAX;
    std::vector<Entry*> entries;  // slot order
  };
  std::unordered_map<std::string, TensorState> tensors_;
  uint64_t registry_gen_ = 0;
  // The last id sequence (row → slot) and its distinct ids (slot → id).
  std::vector<std::string> last_row_ids_;
  std::vector<bool> last_row_null_;
  struct IdSet {
    std::vector<int32_t> slots;          // row → slot (−1 for a NULL id)
    std::vector<std::string> slot_ids;   // slot → model id
    uint64_t version = 0;
  };
  std::shared_ptr<const IdSet> last_set_;
  uint64_t ids_version_ = 0;
  std::vector<dc_delta_batch*> retired_;  // replaced batches, freed after the next device sync
  uint64_t slots_version_ = UINT64_MAX;    // ids_version_ of the table in slots_dev_
  void* slots_dev_ = nullptr;
  uint64_t slots_capacity_ = 0;
  uint64_t tick_ = 0;

  dc_pool_stats stats_{};
};

}  // namespace pool
}  // namespace dc

struct dc_pool {
  std::unique_ptr<dc::pool::Pool> impl;
};
