// Same loop shape as tract-linalg 0.23.9's avx2_mmm_i32_8x8 main_loop_packed_packed_i8i8:
// an 8-byte load into xmm8 followed by VEX ops on ymm registers, once with the legacy-SSE
// `movq` the kernel uses and once with `vmovq`. gcc -O2 mb.c -o mb && ./mb
#include <stdio.h>
#include <stdint.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e9+t.tv_nsec;}
#define LOOP(MOV) \
  static void loop_##MOV(const int8_t *a, long n){ \
    __asm__ volatile( \
      "vpxor %%ymm0,%%ymm0,%%ymm0\n" \
      "1:\n" \
      #MOV " (%0), %%xmm8\n" \
      "vpmovsxbw %%xmm8, %%ymm8\n" \
      "vpmovsxwd %%xmm8, %%ymm10\n" \
      "vpaddd %%ymm10, %%ymm0, %%ymm0\n" \
      "dec %1\n jnz 1b\n" \
      "vzeroupper\n" : "+r"(a), "+r"(n) :: "xmm0","xmm8","xmm10","memory"); }
LOOP(movq)
LOOP(vmovq)
int main(void){
  static int8_t buf[64]; long n=2000000; double t;
  loop_vmovq(buf, 1000); /* warm */
  t=now(); loop_movq(buf,n);  printf("movq : %.1f ns/iter\n",(now()-t)/n);
  t=now(); loop_vmovq(buf,n); printf("vmovq: %.1f ns/iter\n",(now()-t)/n);
  return 0;
}
