// Pool: registry, entries, acquire/release, budget and LRU eviction, prefetch on host threads.
// The batched apply and its caches live in pool_apply.cpp.
#include "pool/pool.h"

#include <algorithm>

#include "pool/place.h"

namespace dc {
namespace pool {

Pool::Pool(dc_context* ctx, const dc_pool_options& opts)
    : ctx_(ctx), opts_(opts), mem_(make_device_memory(ctx->device->kind)) {
  stats_.budget_bytes = opts.device_budget_bytes;
  unsigned n = opts.host_threads > 0 ? (unsigned)opts.host_threads
                                     : std::min(4u, std::max(1u, std::thread::hardware_concurrency()));
  for (unsigned i = 0; i < n; ++i) workers_.emplace_back([this] { worker_loop(); });
}

Pool::~Pool() {
  {
    Lock lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  // Documented: the host has finished its device work; still, make sure before freeing.
  try {
    mem_->synchronize();
  } catch (...) {
  }
  for (auto& kv : tensors_)
    for (auto& cb : kv.second.batches) dc_delta_batch_free(cb.batch);
  for (dc_delta_batch* b : retired_) dc_delta_batch_free(b);
  for (auto& kv : entries_)
    if (kv.second->delta) dc_delta_free(kv.second->delta);
  mem_->free(slots_dev_);
}

// ---- registry ------------------------------------------------------------------------------------

void Pool::register_model(const std::string& id, const dc_container* c) {
  Lock lk(mu_);
  DC_CHECK(!model_ids_.count(id), DC_ERR_DUPLICATE, "model id '%s' is already registered", id.c_str());
  DC_CHECK(models_.size() < UINT32_MAX, DC_ERR_LIMIT, "too many registrations");
  models_.push_back(Model{id, c, true});
  model_ids_[id] = (uint32_t)(models_.size() - 1);
}

uint32_t Pool::model_index(const std::string& id) const {
  auto it = model_ids_.find(id);
  DC_CHECK(it != model_ids_.end(), DC_ERR_NOT_FOUND, "model id '%s' is not registered", id.c_str());
  return it->second;
}

uint64_t Pool::tensor_index(uint32_t model, const std::string& tensor) const {
  const Model& m = models_[model];
  DC_CHECK(m.live, DC_ERR_NOT_FOUND, "model id '%s' was unregistered", m.id.c_str());
  const int64_t i = m.container->reader->find(tensor);
  DC_CHECK(i >= 0, DC_ERR_NOT_FOUND, "model '%s' has no tensor named '%s'", m.id.c_str(), tensor.c_str());
  return (uint64_t)i;
}

Pool::Entry* Pool::find_entry(const Key& k) {
  auto it = entries_.find(k);
  return it == entries_.end() ? nullptr : it->second.get();
}

Pool::Entry& Pool::entry(uint32_t model, uint64_t tensor) {
  const Model& m = models_[model];
  DC_CHECK(m.live, DC_ERR_NOT_FOUND, "model id '%s' was unregistered", m.id.c_str());
  auto& slot = entries_[Key(model, tensor)];
  if (!slot) {
    slot = std::make_unique<Entry>();
    slot->model = model;
    slot->tensor = tensor;
    slot->packed = m.container->reader->tensors()[tensor].packed_bytes();
  }
  return *slot;
}

void Pool::set_state(Entry& e, dc_pool_entry_state s) {
  if (e.state == DC_POOL_DECODING) --n_decoding_;
  if (e.state == DC_POOL_DECODED) --n_decoded_;
  e.state = s;
  if (s == DC_POOL_DECODING) ++n_decoding_;
  if (s == DC_POOL_DECODED) ++n_decoded_;
}

void Pool::unregister_model(const std::string& id) {
  Lock lk(mu_);
  const uint32_t m = model_index(id);
  auto first = entries_.lower_bound(Key(m, 0));
  auto last = entries_.lower_bound(Key(m + 1, 0));
  for (auto it = first; it != last; ++it)
    DC_CHECK(it->second->refs == 0, DC_ERR_BUSY, "model '%s': delta '%s' is still acquired (%u reference(s))",
             id.c_str(), models_[m].container->reader->tensors()[it->second->tensor].name.c_str(),
             it->second->refs);
  // From here on no acquire of this model can start; wait for decodes already running (they read
  // the container), cancel queued ones.
  models_[m].live = false;
  model_ids_.erase(id);
  for (auto it = first; it != last; ++it)
    if (it->second->state == DC_POOL_DECODING && !it->second->started) set_state(*it->second, DC_POOL_ABSENT);
  cv_.wait(lk, [&] {
    for (auto it = entries_.lower_bound(Key(m, 0)); it != entries_.end() && it->first.first == m; ++it)
      if (it->second->started) return false;
    return true;
  });
  first = entries_.lower_bound(Key(m, 0));
  last = entries_.lower_bound(Key(m + 1, 0));
  bool synced = false;
  for (auto it = first; it != last; ++it) {
    Entry& e = *it->second;
    if (e.state == DC_POOL_RESIDENT) {
      if (!synced) sync_device();
      synced = true;
      if (e.in_lru) {
        lru_.erase(e.lru);
        e.in_lru = false;
        evictable_bytes_ -= e.bytes;
      }
      free_resident(e);
    }
    set_state(e, DC_POOL_ABSENT);
  }
  entries_.erase(first, last);
  ++registry_gen_;  // cached Entry pointers may dangle now
  models_[m].container = nullptr;
  cv_.notify_all();
}

// ---- acquire / release --------------------------------------------------------------------------

void Pool::take_ref(Entry& e) {
  if (e.refs == 0 && e.in_lru) {
    lru_.erase(e.lru);
    e.in_lru = false;
    evictable_bytes_ -= e.bytes;
  }
  ++e.refs;
}

void Pool::release_locked(Entry& e) {
  DC_CHECK(e.refs > 0, DC_ERR_INVALID_ARGUMENT, "delta '%s' is not acquired", e.delta->name.c_str());
  if (--e.refs == 0) {
    e.lru = lru_.insert(lru_.end(), &e);
    e.in_lru = true;
    evictable_bytes_ += e.bytes;
  }
}

void Pool::decode_here(Lock& lk, Entry& e) {
  const Key k(e.model, e.tensor);
  const dc_container* c = models_[e.model].container;
  e.started = true;
  lk.unlock();
  std::unique_ptr<PackedTensor> t;
  std::exception_ptr err;
  try {
    t = std::make_unique<PackedTensor>(decode_tensor(c, k.second, opts_.load_flags));
  } catch (...) {
    err = std::current_exception();
  }
  lk.lock();
  Entry* again = find_entry(k);  // unregister waits for started decodes, so it is still there
  again->started = false;
  again->decoded = std::move(t);
  again->error = err;
  set_state(*again, DC_POOL_DECODED);
  cv_.notify_all();
}

Pool::Entry& Pool::acquire_locked(Lock& lk, uint32_t model, uint64_t tensor, void* stream) {
  bool first_look = true;
  for (;;) {
    Entry& e = entry(model, tensor);  // looked up again after every wait
    if (first_look) {
      ++(e.state == DC_POOL_RESIDENT ? stats_.hits : stats_.misses);
      first_look = false;
    }
    switch (e.state) {
      case DC_POOL_RESIDENT:
        take_ref(e);
        return e;
      case DC_POOL_DECODED:
        if (e.error) {
          std::exception_ptr err = e.error;
          e.error = nullptr;
          e.decoded.reset();
          set_state(e, DC_POOL_ABSENT);
          std::rethrow_exception(err);
        }
        try {
          place_locked(e, stream, false);
        } catch (...) {
          e.decoded.reset();
          set_state(e, DC_POOL_ABSENT);
          throw;
        }
        break;  // now resident: take the reference on the next turn
      case DC_POOL_DECODING:
        if (!e.started) {
          decode_here(lk, e);  // still queued for a worker: do it now rather than wait in line
        } else {
          cv_.wait(lk);
        }
        break;
      case DC_POOL_ABSENT:
        set_state(e, DC_POOL_DECODING);
        decode_here(lk, e);
        break;
    }
  }
}

const dc_delta* Pool::acquire(const std::string& id, const std::string& tensor, void* stream) {
  Lock lk(mu_);
  const uint32_t m = model_index(id);
  Entry& e = acquire_locked(lk, m, tensor_index(m, tensor), stream);
  return e.delta;
}

void Pool::release(const dc_delta* d) {
  Lock lk(mu_);
  auto it = by_delta_.find(d);
  DC_CHECK(it != by_delta_.end(), DC_ERR_INVALID_ARGUMENT, "the delta was not acquired from this pool");
  release_locked(*it->second);
}

// ---- budget ----------------------------------------------------------------------------------------

bool Pool::make_room(uint64_t need) {
  const uint64_t budget = opts_.device_budget_bytes;
  if (need > budget) return false;
  const uint64_t pinned = resident_bytes_ - evictable_bytes_;  // referenced: cannot go
  if (pinned > budget - need) return false;
  bool synced = false;
  while (resident_bytes_ > budget - need) {
    if (!synced) sync_device();  // work enqueued before the releases may still read the victims
    synced = true;
    evict(*lru_.front());
  }
  return true;
}

void Pool::evict(Entry& e) {
  lru_.erase(e.lru);
  e.in_lru = false;
  evictable_bytes_ -= e.bytes;
  free_resident(e);
  ++stats_.evictions;
}

void Pool::free_resident(Entry& e) {
  // Cached batches that name the delta go first (a batch must not outlive its deltas). The device
  // was synchronised by the caller.
  for (auto& kv : tensors_) {
    auto& list = kv.second.batches;
    for (size_t i = 0; i < list.size();) {
      if (std::find(list[i].members.begin(), list[i].members.end(), e.delta) != list[i].members.end()) {
        dc_delta_batch_free(list[i].batch);
        list.erase(list.begin() + (long)i);
      } else {
        ++i;
      }
    }
  }
  by_delta_.erase(e.delta);
  dc_delta_free(e.delta);
  e.delta = nullptr;
  resident_bytes_ -= e.bytes;
  e.bytes = 0;
  set_state(e, DC_POOL_ABSENT);
}

bool Pool::place_locked(Entry& e, void* stream, bool for_prefetch) {
  const Model& m = models_[e.model];
  const std::string& name = m.container->reader->tensors()[e.tensor].name;
  auto no_room = [&](uint64_t need) -> bool {
    if (for_prefetch) return false;
    fail(DC_ERR_BUDGET,
         format("delta '%s' of model '%s' needs %llu bytes; budget %llu, resident %llu of which %llu referenced",
                name.c_str(), m.id.c_str(), (unsigned long long)need, (unsigned long long)opts_.device_budget_bytes,
                (unsigned long long)resident_bytes_, (unsigned long long)(resident_bytes_ - evictable_bytes_)));
  };
  // Evict for the expected size first, so the device never holds more than the budget (up to the
  // estimate's error, which the learned overhead keeps to the first load's bookkeeping bytes).
  const uint64_t expected = e.actual ? e.actual : e.packed + overhead_;
  if (!make_room(expected)) return no_room(expected);
  std::unique_ptr<dc_delta> d;
  for (;;) {
    try {
      d = place_tensor(ctx_, *e.decoded, stream);
      break;
    } catch (const Error& err) {
      // The device can run out before the budget does (allocator granularity, other users of the
      // GPU): give back the least recently used delta and try again while there is one.
      if (err.status() != DC_ERR_OUT_OF_MEMORY || lru_.empty()) throw;
      sync_device();
      evict(*lru_.front());
    }
  }
  const uint64_t actual = d->device_bytes;
  e.actual = actual;
  if (actual > e.packed) overhead_ = std::max(overhead_, actual - e.packed);
  const uint64_t budget = opts_.device_budget_bytes;
  const bool fits = actual <= budget && resident_bytes_ <= budget - actual;
  if (!fits && !make_room(actual)) {
    sync_device();  // the upload may still be in flight
    d.reset();
    return no_room(actual);
  }
  e.delta = d.release();
  e.bytes = actual;
  e.decoded.reset();
  resident_bytes_ += actual;
  by_delta_[e.delta] = &e;
  set_state(e, DC_POOL_RESIDENT);
  ++stats_.loads;
  if (for_prefetch) {  // unreferenced: evictable, most recently used
    e.lru = lru_.insert(lru_.end(), &e);
    e.in_lru = true;
    evictable_bytes_ += actual;
    ++stats_.prefetch_loaded;
  }
  return true;
}

void Pool::sync_device() {
  mem_->synchronize();
  for (dc_delta_batch* b : retired_) dc_delta_batch_free(b);
  retired_.clear();
}

// ---- prefetch --------------------------------------------------------------------------------------

void Pool::prefetch(const std::string& id, const char* tensor, void* stream) {
  {
    Lock lk(mu_);
    const uint32_t m = model_index(id);
    std::vector<uint64_t> which;
    if (tensor) {
      which.push_back(tensor_index(m, tensor));
    } else {
      const uint64_t n = models_[m].container->reader->tensors().size();
      for (uint64_t i = 0; i < n; ++i) which.push_back(i);
    }
    for (uint64_t t : which) {
      Entry& e = entry(m, t);
      if (e.state != DC_POOL_ABSENT) continue;
      set_state(e, DC_POOL_DECODING);
      e.stream = stream;
      queue_.push_back(Key(m, t));
    }
  }
  cv_.notify_all();
}

void Pool::worker_loop() {
  Lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    const Key k = queue_.front();
    queue_.pop_front();
    Entry* e = find_entry(k);
    if (!e || e->state != DC_POOL_DECODING || e->started) continue;  // cancelled or taken
    decode_here(lk, *e);
    ready_.push_back(k);
  }
}

void Pool::drain_prefetched() {
  while (!ready_.empty()) {
    const Key k = ready_.front();
    ready_.pop_front();
    Entry* e = find_entry(k);
    if (!e || e->state != DC_POOL_DECODED || e->error) continue;  // placed by an acquire, or failed
    bool placed = false;
    try {
      placed = place_locked(*e, e->stream, true);
    } catch (...) {
      e->error = std::current_exception();  // reported by wait() or the next acquire
      e->decoded.reset();
      continue;
    }
    if (!placed) {
      e->decoded.reset();
      set_state(*e, DC_POOL_ABSENT);
      ++stats_.prefetch_dropped;
    }
  }
}

void Pool::wait() {
  Lock lk(mu_);
  cv_.wait(lk, [&] { return n_decoding_ == 0; });
  drain_prefetched();
  std::exception_ptr first;
  for (auto& kv : entries_) {
    Entry& e = *kv.second;
    if (e.state == DC_POOL_DECODED && e.error) {
      if (!first) first = e.error;
      e.error = nullptr;
      e.decoded.reset();
      set_state(e, DC_POOL_ABSENT);
    }
  }
  if (first) std::rethrow_exception(first);
}

// ---- queries -----------------------------------------------------------------------------------------

void Pool::query(const std::string& id, const std::string& tensor, dc_pool_entry_state* state, uint32_t* refs) {
  Lock lk(mu_);
  const uint32_t m = model_index(id);
  const Entry* e = find_entry(Key(m, tensor_index(m, tensor)));
  if (state) *state = e ? e->state : DC_POOL_ABSENT;
  if (refs) *refs = e ? e->refs : 0;
}

dc_pool_stats Pool::stats() {
  Lock lk(mu_);
  dc_pool_stats s = stats_;
  s.struct_size = sizeof s;
  s.resident_bytes = resident_bytes_;
  s.resident_deltas = by_delta_.size();
  s.referenced_deltas = by_delta_.size() - lru_.size();
  s.prefetch_pending = n_decoding_ + n_decoded_;
  return s;
}

}  // namespace pool
}  // namespace dc
