/*
 * 00_apply_one_layer.c — the smallest deltacome host.
 *
 *   00_apply_one_layer MODEL.dcz [TENSOR]
 *
 * Opens a container, creates a CPU context, loads one tensor's delta (the first low-rank one if
 * TENSOR is not given), applies it to a deterministic input (y = x·ΔWᵀ for 4 tokens) and checks the
 * result against a float64 reference built from the same delta merged into a zero weight
 * (dc_merge_delta gives ΔŴ densely). Prints a checksum and the relative error; exits 1 on any
 * failure or if the error is above 1e-4.
 *
 * Build: cc 00_apply_one_layer.c $(pkg-config --cflags --libs deltacome) -lm
 *    or: find_package(deltacome) + target_link_libraries(app PRIVATE deltacome::deltacome)
 */
#include <deltacome/deltacome.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Prints the failing call, the status name and the library's message, and returns 1. */
static int fail(const char* what, dc_status st) {
  fprintf(stderr, "%s failed: %s: %s\n", what, dc_status_string(st), dc_last_error_message());
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL.dcz [TENSOR]\n", argv[0]);
    return 2;
  }
  if (dc_version() != DC_VERSION_NUMBER) {
    fprintf(stderr, "header %d but library %s\n", DC_VERSION_NUMBER, dc_version_string());
    return 1;
  }

  /* snippet-begin */
  dc_container* container = NULL;
  dc_status st = dc_container_open(&container, argv[1], NULL);
  if (st != DC_OK) return fail("dc_container_open", st);

  /* Pick the tensor: the one named on the command line, else the first low-rank one. */
  uint64_t index = 0;
  dc_tensor_info info = {0};
  info.struct_size = sizeof info;
  if (argc > 2) {
    st = dc_container_find_tensor(container, argv[2], &index);
    if (st == DC_OK) st = dc_container_tensor_info(container, index, &info);
  } else {
    st = DC_ERR_NOT_FOUND;
    for (uint64_t i = 0; i < dc_container_tensor_count(container); i++) {
      st = dc_container_tensor_info(container, i, &info);
      if (st != DC_OK || info.kind == DC_KIND_LOWRANK) { index = i; break; }
      st = DC_ERR_NOT_FOUND;
    }
  }
  if (st != DC_OK) {
    fail("finding the tensor", st);
    dc_container_close(container);
    return 1;
  }

  dc_context_options copts;
  dc_context_options_init(&copts);
  copts.backend = DC_BACKEND_CPU;
  dc_context* ctx = NULL;
  st = dc_context_create(&ctx, &copts);
  if (st != DC_OK) {
    fail("dc_context_create", st);
    dc_container_close(container);
    return 1;
  }

  dc_delta* delta = NULL;
  st = dc_delta_load_index(&delta, ctx, container, index, NULL);
  if (st != DC_OK) {
    fail("dc_delta_load_index", st); /* before any other call: the message is per call */
    dc_context_destroy(ctx);
    dc_container_close(container);
    return 1;
  }

  const uint64_t m = 4, rows = info.rows, cols = info.cols;
  float* x = malloc(sizeof(float) * m * cols);
  float* y = calloc(m * rows, sizeof(float));
  float* dw = calloc(rows * cols, sizeof(float));
  int rc = 1;
  if (!x || !y || !dw) {
    fprintf(stderr, "out of memory\n");
    goto done;
  }
  for (uint64_t i = 0; i < m * cols; i++) x[i] = (float)sin(0.37 * (double)i + 0.1);

  /* y += x · ΔWᵀ, computed from the packed form. */
  dc_apply_params p;
  dc_apply_params_init(&p);
  p.m = m;
  p.x = x;
  p.x_dtype = DC_DTYPE_F32;
  p.y = y;
  p.y_dtype = DC_DTYPE_F32;
  st = dc_apply_delta_linear(delta, &p);
  if (st != DC_OK) {
    fail("dc_apply_delta_linear", st);
    goto done;
  }
  /* snippet-end */

  /* Reference: ΔŴ densely (merge into zeros), then x · ΔŴᵀ in float64. */
  st = dc_merge_delta(delta, dw, DC_DTYPE_F32, 0, 1.0f, NULL);
  if (st != DC_OK) {
    fail("dc_merge_delta", st);
    goto done;
  }
  double err2 = 0, ref2 = 0, checksum = 0;
  for (uint64_t t = 0; t < m; t++) {
    for (uint64_t r = 0; r < rows; r++) {
      double ref = 0;
      for (uint64_t c = 0; c < cols; c++) ref += (double)x[t * cols + c] * dw[r * cols + c];
      double d = y[t * rows + r] - ref;
      err2 += d * d;
      ref2 += ref * ref;
      checksum += y[t * rows + r] * (double)((t * rows + r) % 7 + 1);
    }
  }
  double rel = sqrt(err2 / (ref2 > 0 ? ref2 : 1));
  printf("tensor %s [%llu x %llu] rank %u: checksum %.6e, relative error vs merge %.3e\n", info.name,
         (unsigned long long)rows, (unsigned long long)cols, info.rank, checksum, rel);
  rc = (rel <= 1e-4 && ref2 > 0) ? 0 : 1;
  if (rc) fprintf(stderr, "apply does not match the reference\n");

done:
  free(x);
  free(y);
  free(dw);
  dc_delta_free(delta);
  dc_context_destroy(ctx);
  dc_container_close(container); /* info.name belongs to it: closed last */
  return rc;
}
