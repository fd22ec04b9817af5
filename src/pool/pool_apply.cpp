// dc_pool_apply_batched: model ids → resident deltas → a cached dc_delta_batch and row→slot table
// → one dc_apply_delta_linear_batched.
//
// Slots are numbered by first appearance of each distinct id in the row list, so the row→slot table
// depends only on the id sequence: a decode step that runs every layer with the same ids uploads it
// once, and each layer reuses its cached batch while the same deltas stay resident.
#include <cstring>
#include <unordered_map>

#include "pool/pool.h"

namespace dc {
namespace pool {
namespace {

constexpr size_t kBatchesPerTensor = 4;  // distinct id sets kept per tensor
constexpr size_t kRetiredBeforeSync = 64;

uint64_t dtype_bytes(dc_dtype t) { return t == DC_DTYPE_F32 ? 4 : 2; }

}  // namespace

void Pool::retire(dc_delta_batch* b) {
  retired_.push_back(b);  // in-flight applies may still read it: freed after the next device sync
  if (retired_.size() >= kRetiredBeforeSync) sync_device();
}

void Pool::apply_batched(const std::string& tensor, const char* const* ids, const dc_apply_params& p) {
  DC_CHECK(p.struct_size >= 8, DC_ERR_INVALID_ARGUMENT, "dc_apply_params.struct_size is %u", p.struct_size);
  if (p.m == 0) return;
  DC_CHECK(ids, DC_ERR_INVALID_ARGUMENT, "model_ids is NULL");
  DC_CHECK(p.m <= (1ull << 31), DC_ERR_INVALID_ARGUMENT, "m = %llu rows is too many for one pool apply",
           (unsigned long long)p.m);

  Lock lk(mu_);
  // Distinct ids in order of first appearance, and each row's slot; reused while the sequence repeats.
  bool same_ids = last_row_ids_.size() == p.m;
  for (uint64_t i = 0; same_ids && i < p.m; ++i)
    same_ids = ids[i] ? !last_row_null_[i] && last_row_ids_[i] == ids[i] : (bool)last_row_null_[i];
  if (!same_ids) {
    std::vector<int32_t> slots(p.m);
    std::vector<std::string> slot_ids;
    std::unordered_map<std::string, int32_t> slot_of;
    for (uint64_t i = 0; i < p.m; ++i) {
      if (!ids[i]) {
        slots[i] = -1;
        continue;
      }
      auto ins = slot_of.emplace(ids[i], (int32_t)slot_ids.size());
      if (ins.second) slot_ids.emplace_back(ids[i]);
      slots[i] = ins.first->second;
    }
    last_row_ids_.assign(p.m, std::string());
    last_row_null_.assign(p.m, true);
    for (uint64_t i = 0; i < p.m; ++i)
      if (ids[i]) {
        last_row_ids_[i] = ids[i];
        last_row_null_[i] = false;
      }
    auto set = std::make_shared<IdSet>();
    set->slots = std::move(slots);
    set->slot_ids = std::move(slot_ids);
    set->version = ++ids_version_;
    last_set_ = std::move(set);
  }
  // Held by pointer: another thread's apply may replace last_set_ while this one decodes.
  const std::shared_ptr<const IdSet> set = last_set_;
  const std::vector<int32_t>& slots = set->slots;
  const std::vector<std::string>& slot_ids = set->slot_ids;
  DC_CHECK(!slot_ids.empty() || !(p.flags & DC_APPLY_INCLUDE_BASE), DC_ERR_INVALID_ARGUMENT,
           "every row's model id is NULL: with DC_APPLY_INCLUDE_BASE there is no delta to apply the base with; "
           "run the base GEMM directly");
  if (slot_ids.empty()) return;  // y += nothing

  // Acquire the whole set; references keep each member resident while the others load.
  TensorState& ts = tensors_[tensor];
  const uint64_t version = set->version;
  std::vector<Entry*> held;
  struct Releaser {
    Pool* pool;
    std::vector<Entry*>* held;
    ~Releaser() {
      for (Entry* e : *held) pool->release_locked(*e);
    }
  } releaser{this, &held};
  for (size_t s = 0; s < slot_ids.size(); ++s) {
    // The cached entry is valid while no unregister ran (checked again after every slow acquire,
    // which may release the mutex while decoding).
    Entry* cached = ts.gen == registry_gen_ && ts.ids_version == version ? ts.entries[s] : nullptr;
    if (cached && cached->state == DC_POOL_RESIDENT) {
      ++stats_.hits;
      take_ref(*cached);
      held.push_back(cached);
      continue;
    }
    const uint32_t m = cached ? cached->model : model_index(slot_ids[s]);
    const uint64_t t = cached ? cached->tensor : tensor_index(m, tensor);
    held.push_back(&acquire_locked(lk, m, t, p.stream));
  }
  ts.entries = held;
  ts.gen = registry_gen_;
  ts.ids_version = version;

  std::vector<const dc_delta*> members;
  for (Entry* e : held) members.push_back(e->delta);
  const dc_delta* d0 = members[0];
  bool any_dense = false, all_dense = true;
  for (size_t s = 0; s < members.size(); ++s) {
    const dc_delta* d = members[s];
    DC_CHECK(d->view_rows == d0->view_rows && d->view_cols == d0->view_cols, DC_ERR_SHAPE_MISMATCH,
             "tensor '%s' is %llux%llu in model '%s' but %llux%llu in model '%s'", tensor.c_str(),
             (unsigned long long)d->view_rows, (unsigned long long)d->view_cols, slot_ids[s].c_str(),
             (unsigned long long)d0->view_rows, (unsigned long long)d0->view_cols, slot_ids[0].c_str());
    const bool dense = d->kind == DC_KIND_DENSE;
    any_dense = any_dense || dense;
    all_dense = all_dense && dense;
  }

  if (any_dense) {
    // Dense deltas cannot join a dc_delta_batch: apply them one row at a time.
    DC_CHECK(all_dense, DC_ERR_UNSUPPORTED,
             "tensor '%s' mixes dense and low-rank/BitDelta deltas across models; apply them separately",
             tensor.c_str());
    DC_CHECK(!(p.flags & DC_APPLY_INCLUDE_BASE), DC_ERR_UNSUPPORTED,
             "tensor '%s' is dense: dc_pool_apply_batched applies dense deltas row by row, without "
             "DC_APPLY_INCLUDE_BASE", tensor.c_str());
    const bool bias = d0->cols == 1;
    const uint64_t ldx = p.ldx ? p.ldx : d0->view_cols, ldy = p.ldy ? p.ldy : d0->view_rows;
    for (uint64_t i = 0; i < p.m; ++i) {
      if (slots[i] < 0) continue;
      dc_apply_params row = p;
      row.m = 1;
      if (!bias || row.x) row.x = static_cast<const char*>(p.x) + i * ldx * dtype_bytes(p.x_dtype);
      row.y = static_cast<char*>(p.y) + i * ldy * dtype_bytes(p.y_dtype);
      check_backend(dc_apply_delta_linear(members[(size_t)slots[i]], &row), "pool: dense row apply");
    }
    drain_prefetched();
    return;
  }

  // The set's batch: reuse one built for exactly these resident deltas in this order.
  auto& batches = ts.batches;
  CachedBatch* use = nullptr;
  for (auto& cb : batches)
    if (cb.members == members) use = &cb;
  if (!use) {
    if (batches.size() >= kBatchesPerTensor) {
      auto oldest = std::min_element(batches.begin(), batches.end(),
                                     [](const CachedBatch& a, const CachedBatch& b) { return a.last_use < b.last_use; });
      retire(oldest->batch);
      batches.erase(oldest);
    }
    dc_delta_batch* b = nullptr;
    check_backend(dc_delta_batch_create(&b, members.data(), members.size()), "pool: building the batch");
    batches.push_back(CachedBatch{members, b, 0});
    use = &batches.back();
    ++stats_.batch_builds;
  }
  use->last_use = ++tick_;

  // The row→slot table, where the backend reads it.
  if (slots_version_ != version || !slots_dev_) {
    mem_->bind(p.x);
    if (slots_capacity_ < p.m) {
      if (slots_dev_) {
        sync_device();  // an earlier apply may still read the old table
        mem_->free(slots_dev_);
        slots_dev_ = nullptr;
        slots_capacity_ = 0;
      }
      const uint64_t cap = std::max<uint64_t>(p.m, 256);
      slots_dev_ = mem_->alloc(cap * sizeof(int32_t));
      slots_capacity_ = cap;
    }
    mem_->upload(slots_dev_, slots.data(), p.m * sizeof(int32_t), p.stream);
    slots_version_ = version;
    ++stats_.slot_uploads;
  }
  check_backend(dc_apply_delta_linear_batched(use->batch, static_cast<const int32_t*>(slots_dev_), &p),
                "pool: batched apply");
  drain_prefetched();  // the set is still referenced, so placing prefetches cannot evict it
}

}  // namespace pool
}  // namespace dc
