/* catalogue.c - device kinds with datasheet figures. Peaks are the vendors' published numbers
 * (dense, no sparsity); sustained fractions are applied by the cost model, the same for all. */
#include <string.h>
#include <strings.h>

#include "planner.h"

#define T 1e12
#define G 1e9
#define GiB (1024.0 * 1024.0 * 1024.0)

const wh__device_kind wh__catalogue[] = {
    /* NVIDIA Tesla P100 SXM2 datasheet: 10.6 TFLOPS FP32, 21.2 FP16, 732 GB/s HBM2, NVLink 160 GB/s */
    {"P100-16GB", 10.6 * T, 21.2 * T, 732 * G, 16 * GiB, 80 * G, "NVIDIA Tesla P100 datasheet (SXM2)"},
    /* NVIDIA Tesla V100 SXM2 datasheet: 15.7 TFLOPS FP32, 125 tensor, 900 GB/s, NVLink 300 GB/s */
    {"V100-16GB", 15.7 * T, 125 * T, 900 * G, 16 * GiB, 150 * G, "NVIDIA Tesla V100 datasheet (SXM2)"},
    {"V100-32GB", 15.7 * T, 125 * T, 900 * G, 32 * GiB, 150 * G, "NVIDIA Tesla V100 datasheet (SXM2)"},
    /* NVIDIA T4 datasheet: 8.1 TFLOPS FP32, 65 FP16 tensor, 320 GB/s, PCIe Gen3 x16 */
    {"T4", 8.1 * T, 65 * T, 320 * G, 16 * GiB, 16 * G, "NVIDIA T4 datasheet"},
    /* NVIDIA A10 datasheet: 31.2 TFLOPS FP32, 125 BF16 tensor, 600 GB/s, PCIe Gen4 x16 */
    {"A10", 31.2 * T, 125 * T, 600 * G, 24 * GiB, 32 * G, "NVIDIA A10 datasheet"},
    /* NVIDIA A100 datasheet (SXM): 19.5 TFLOPS FP32, 312 BF16, 1555 / 2039 GB/s, NVLink 600 GB/s */
    {"A100-40GB", 19.5 * T, 312 * T, 1555 * G, 40 * GiB, 300 * G, "NVIDIA A100 datasheet (SXM4 40GB)"},
    {"A100-80GB", 19.5 * T, 312 * T, 2039 * G, 80 * GiB, 300 * G, "NVIDIA A100 datasheet (SXM4 80GB)"},
    /* NVIDIA H100 SXM datasheet: 67 TFLOPS FP32, 989 BF16 dense, 3.35 TB/s, NVLink 900 GB/s */
    {"H100", 67 * T, 989 * T, 3350 * G, 80 * GiB, 450 * G, "NVIDIA H100 datasheet (SXM5)"},
    /* NVIDIA H200 SXM datasheet: as H100 compute, 4.8 TB/s HBM3e, 141 GB */
    {"H200", 67 * T, 989 * T, 4800 * G, 141e9, 450 * G, "NVIDIA H200 datasheet (SXM)"},
    /* A generic server CPU socket (AVX-512, ~1.5 TFLOPS FP32, 8-channel DDR4); probe for real figures */
    {"CPU", 1.5 * T, 1.5 * T, 150 * G, 256 * GiB, 10 * G, "generic; wh_cluster_probe measures the real one"},
};
const int wh__catalogue_n = (int)(sizeof wh__catalogue / sizeof wh__catalogue[0]);

const wh__device_kind *wh__catalogue_find(const char *name) {
  if (!name) return NULL;
  for (int i = 0; i < wh__catalogue_n; i++)
    if (strcasecmp(wh__catalogue[i].name, name) == 0) return &wh__catalogue[i];
  return NULL;
}
