// Device-side rebuild of a `.octet` budget from the file prefix copied to the GPU as
// is (one host-to-device copy of exactly the compressed bytes). Every kernel reads
// its inputs at byte offsets into that copy; sections and their parts are 64-byte
// aligned in the file, so f16 and f32 reads are naturally aligned.
//
// Layouts (must match quant/src/bitstack and quant/src/palette, and the Rust
// emulation in quant/src/gpu/emulate.rs, which the CPU tests compare with the CPU
// rebuild):
// - BitStack block section: signs at 0 (row-major, each row ceil(cols/8) bytes, bit
//   j%8 of byte j/8 set = negative), u at u_off (rows x rank f16), vt at vt_off
//   (rank x cols f16). W = (sum_b sign_b * (u_b vt_b)) / s, s per input channel.
// - Palette section: f16 LUTs (2^bits per group of group_rows rows) at luts_off,
//   packed index rows at idx_off (ceil(cols*bits/8) bytes per row, LSB-first stream).
// - Scaled / nested palette: see nested_palette_decode.
#include <cuda_fp16.h>

#define TR 64   // output rows per thread block
#define TC 64   // output columns per thread block
#define KC 16   // rank chunk held in shared memory
#define TX 8    // threads along columns, 8 columns (one sign byte) each
#define TY 32   // threads along rows, TR / TY rows each
#define RPT (TR / TY)

// One fused pass per matrix: for each output element, loop over the loaded blocks,
// form dot(u_b[i,:], vt_b[:,j]) from shared-memory tiles, flip its sign with the
// packed bit, accumulate in f32 registers, divide by the scale and write once.
extern "C" __global__ void __launch_bounds__(TX * TY) bitstack_rebuild(
    const unsigned char* __restrict__ base,
    const unsigned long long* __restrict__ block_offs,
    int n_blocks, int rows, int cols, int rank,
    unsigned long long u_off, unsigned long long vt_off,
    long long scales_off,
    float* __restrict__ out)
{
    __shared__ float su[TR][KC + 1];  // +1: rows of a warp hit different banks
    __shared__ float svt[KC][TC];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int tid = ty * TX + tx;
    const int row0 = blockIdx.y * TR, col0 = blockIdx.x * TC;
    const int c0 = col0 + tx * 8;
    const int srb = (cols + 7) / 8;
    float acc[RPT][8];
#pragma unroll
    for (int m = 0; m < RPT; m++)
#pragma unroll
        for (int c = 0; c < 8; c++) acc[m][c] = 0.f;

    for (int b = 0; b < n_blocks; b++) {
        const unsigned char* blk = base + block_offs[b];
        const __half* u = (const __half*)(blk + u_off);
        const __half* vt = (const __half*)(blk + vt_off);
        float p[RPT][8];
#pragma unroll
        for (int m = 0; m < RPT; m++)
#pragma unroll
            for (int c = 0; c < 8; c++) p[m][c] = 0.f;
        for (int k0 = 0; k0 < rank; k0 += KC) {
            const int kc = min(KC, rank - k0);
            for (int e = tid; e < TR * KC; e += TX * TY) {
                const int rr = e / KC, kk = e % KC, row = row0 + rr;
                su[rr][kk] = (row < rows && kk < kc)
                    ? __half2float(u[(size_t)row * rank + k0 + kk]) : 0.f;
            }
            for (int e = tid; e < KC * TC; e += TX * TY) {
                const int kk = e / TC, cc = e % TC, col = col0 + cc;
                svt[kk][cc] = (col < cols && kk < kc)
                    ? __half2float(vt[(size_t)(k0 + kk) * cols + col]) : 0.f;
            }
            __syncthreads();
            for (int kk = 0; kk < kc; kk++) {
#pragma unroll
                for (int m = 0; m < RPT; m++) {
                    const float uu = su[ty + TY * m][kk];
#pragma unroll
                    for (int c = 0; c < 8; c++)
                        p[m][c] = fmaf(uu, svt[kk][tx * 8 + c], p[m][c]);
                }
            }
            __syncthreads();
        }
        if (c0 < cols) {
#pragma unroll
            for (int m = 0; m < RPT; m++) {
                const int row = row0 + ty + TY * m;
                if (row >= rows) continue;
                const unsigned int byte = blk[(size_t)row * srb + c0 / 8];
#pragma unroll
                for (int c = 0; c < 8; c++) {
                    const unsigned int flip = ((byte >> c) & 1u) << 31;
                    acc[m][c] += __uint_as_float(__float_as_uint(p[m][c]) ^ flip);
                }
            }
        }
    }

    if (c0 >= cols) return;
    float inv[8];
#pragma unroll
    for (int c = 0; c < 8; c++) {
        const int col = c0 + c;
        inv[c] = (scales_off >= 0 && col < cols)
            ? 1.0f / ((const float*)(base + scales_off))[col] : 1.0f;
    }
#pragma unroll
    for (int m = 0; m < RPT; m++) {
        const int row = row0 + ty + TY * m;
        if (row >= rows) continue;
        float* o = out + (size_t)row * cols;
#pragma unroll
        for (int c = 0; c < 8; c++) {
            const int col = c0 + c;
            if (col < cols) o[col] = scales_off >= 0 ? acc[m][c] * inv[c] : acc[m][c];
        }
    }
}

// Palette lookup: one thread per weight unpacks its b-bit index (at most two bytes,
// b <= 8) and gathers its group's f16 centroid.
extern "C" __global__ void palette_decode(
    const unsigned char* __restrict__ base,
    unsigned long long luts_off, unsigned long long idx_off,
    int rows, int cols, int bits, int group_rows,
    float* __restrict__ out)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const int i = blockIdx.y;
    if (j >= cols || i >= rows) return;
    const size_t rb = ((size_t)cols * bits + 7) / 8;
    const size_t bit = (size_t)j * bits;
    const unsigned char* row = base + idx_off + (size_t)i * rb;
    unsigned int v = row[bit / 8];
    if ((bit % 8) + bits > 8) v |= (unsigned int)row[bit / 8 + 1] << 8;
    const unsigned int k = 1u << bits;
    const unsigned int ix = (v >> (bit % 8)) & (k - 1);
    const __half* lut = (const __half*)(base + luts_off);
    out[(size_t)i * cols + j] = __half2float(lut[(size_t)(i / group_rows) * k + ix]);
}

// The w-bit field k (w <= 8) of a packed LSB-first stream: at most two bytes.
__device__ __forceinline__ unsigned int field(const unsigned char* row, size_t k, int w)
{
    const size_t bit = k * (size_t)w;
    unsigned int v = row[bit / 8];
    if ((bit % 8) + w > 8) v |= (unsigned int)row[bit / 8 + 1] << 8;
    return (v >> (bit % 8)) & ((1u << w) - 1u);
}

// Scaled and (rescaled) nested palettes (quant/src/palette/scaled.rs, nested.rs,
// rescaled.rs): one thread per weight. The base index (bits wide) gains one bit per
// loaded refinement plane (plane_offs, in step order; bit j%8 of byte j/8 of a row of
// ceil(cols/8) bytes), then looks up the last loaded table (f16). With a correction
// (rescale_bits > 0: the last loaded step's, or the base's own with none loaded) the
// block's code picks [f, g] (f16 pairs) and the level becomes f*t + g. Last, the
// block's 6-bit scale and offset codes (2 per block, packed per row) and the row's
// f16 [d, m] give s = d*cs, o = m*co and the weight s*t + o. Every multiply and add is
// rounded on its own (__fmul_rn/__fadd_rn keep nvcc from fusing them), as on the CPU,
// so the result is bit-identical to the CPU rebuild.
#define SCALE_CODE_BITS 6
extern "C" __global__ void nested_palette_decode(
    const unsigned char* __restrict__ base,
    const unsigned long long* __restrict__ plane_offs, int n_planes,
    unsigned long long table_off, unsigned long long params_off,
    unsigned long long codes_off, unsigned long long idx_off,
    int rows, int cols, int bits, int group_cols,
    int rescale_bits, unsigned long long entries_off, unsigned long long rcodes_off,
    float* __restrict__ out)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const int i = blockIdx.y;
    if (j >= cols || i >= rows) return;
    const size_t rb = ((size_t)cols * bits + 7) / 8;
    const size_t pb = ((size_t)cols + 7) / 8;
    const size_t nb = ((size_t)cols + group_cols - 1) / group_cols;
    unsigned int ix = field(base + idx_off + (size_t)i * rb, j, bits);
    for (int p = 0; p < n_planes; p++) {
        const unsigned char byte = base[plane_offs[p] + (size_t)i * pb + j / 8];
        ix = (ix << 1) | ((byte >> (j % 8)) & 1u);
    }
    float v = __half2float(((const __half*)(base + table_off))[ix]);
    const size_t b = (size_t)(j / group_cols);
    if (rescale_bits > 0) {
        const size_t rrb = (nb * rescale_bits + 7) / 8;
        const unsigned int code = field(base + rcodes_off + (size_t)i * rrb, b, rescale_bits);
        const __half* e = (const __half*)(base + entries_off);
        v = __fadd_rn(__fmul_rn(__half2float(e[2 * code]), v), __half2float(e[2 * code + 1]));
    }
    const size_t crb = (2 * nb * SCALE_CODE_BITS + 7) / 8;
    const unsigned char* crow = base + codes_off + (size_t)i * crb;
    const unsigned int cs = field(crow, 2 * b, SCALE_CODE_BITS);
    const unsigned int co = field(crow, 2 * b + 1, SCALE_CODE_BITS);
    const __half* dm = (const __half*)(base + params_off);
    const float s = __fmul_rn(__half2float(dm[2 * i]), (float)cs);
    const float o = __fmul_rn(__half2float(dm[2 * i + 1]), (float)co);
    out[(size_t)i * cols + j] = __fadd_rn(__fmul_rn(s, v), o);
}

// Resident f16 tensors widened to f32.
extern "C" __global__ void widen_f16(
    const unsigned char* __restrict__ base, unsigned long long off,
    unsigned long long n, float* __restrict__ out)
{
    const __half* src = (const __half*)(base + off);
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x)
        out[e] = __half2float(src[e]);
}

// Resident f32 tensors copied out of the byte buffer.
extern "C" __global__ void copy_f32(
    const unsigned char* __restrict__ base, unsigned long long off,
    unsigned long long n, float* __restrict__ out)
{
    const float* src = (const float*)(base + off);
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x)
        out[e] = src[e];
}
