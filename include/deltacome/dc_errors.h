/*
 * deltacome — status codes.
 *
 * Values are pinned: a code keeps its number forever, new codes are appended.
 * Hosts should treat unknown values as generic errors (the enum is open-ended).
 */
#ifndef DELTACOME_DC_ERRORS_H
#define DELTACOME_DC_ERRORS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dc_status {
  DC_OK = 0,
  DC_ERR_INVALID_ARGUMENT = 1,   /* a NULL handle, bad option value, wrong struct_size, ...     */
  DC_ERR_IO = 2,                 /* open/read/write/mmap/rename failed (errno text in message) */
  DC_ERR_BAD_MAGIC = 3,          /* not a .dcz / safetensors file                               */
  DC_ERR_UNSUPPORTED_VERSION = 4,/* a format major version or required feature we do not know  */
  DC_ERR_TRUNCATED = 5,          /* the file ends before a structure it declares               */
  DC_ERR_CORRUPT = 6,            /* a structure is inconsistent (manifest, header, JSON, ...)   */
  DC_ERR_CHECKSUM = 7,           /* an XXH3-64 digest does not match                           */
  DC_ERR_OVERFLOW = 8,           /* a declared size overflows 64-bit arithmetic or the shape   */
  DC_ERR_LIMIT = 9,              /* a declared size exceeds a safety limit                     */
  DC_ERR_NOT_FOUND = 10,         /* no tensor / file / backend with that name                  */
  DC_ERR_OUT_OF_MEMORY = 11,     /* host or device allocation failed                           */
  DC_ERR_BASE_MISMATCH = 12,     /* the base model's fingerprint differs from the container's  */
  DC_ERR_UNSUPPORTED = 13,       /* valid request this backend/build cannot do (dtype, kind)   */
  DC_ERR_BACKEND = 14,           /* the GPU runtime reported an error                          */
  DC_ERR_SHAPE_MISMATCH = 15,    /* operand shapes or leading dimensions do not fit the delta  */
  DC_ERR_DUPLICATE = 16,         /* two tensors share a name                                   */
  DC_ERR_OVERLAP = 17,           /* payload segments overlap, leave holes, or are misaligned   */
  DC_ERR_DECOMPRESS = 18,        /* a zstd frame is invalid or its content size is wrong       */
  DC_ERR_BUDGET = 19,            /* a pool's memory budget cannot hold the request             */
  DC_ERR_BUSY = 20,              /* the object is in use (e.g. a pooled delta still acquired)  */
  DC_ERR_INTERNAL = 99           /* a bug in deltacome: please report it                       */
} dc_status;

#ifdef __cplusplus
}
#endif
#endif /* DELTACOME_DC_ERRORS_H */
