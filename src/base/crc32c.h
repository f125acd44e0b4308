/* crc32c.h - CRC-32C (Castagnoli, the checksum of iSCSI, ext4 and RocksDB): the per-tensor
 * checksum of checkpoints. SSE 4.2's crc32 instruction on three streams where the CPU has it. */
#ifndef WH_CRC32C_H
#define WH_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* The CRC of data[0..n) continuing from crc, the CRC of what came before it (0 for none):
 * wh__crc32c(wh__crc32c(0, a, na), b, nb) is the CRC of a followed by b. */
uint32_t wh__crc32c(uint32_t crc, const void *data, size_t n);
/* The CRC of A followed by B, from crc_a, crc_b and B's length: chunks checksummed apart (by
 * several threads) give the CRC of the whole. */
uint32_t wh__crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

#endif
