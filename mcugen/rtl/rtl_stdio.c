/* picolibc's stdout and stderr for the RTL harness: every character goes to RTL_PUTC (the
 * harness's stderr), so printf works for debugging. Without semihosting picolibc leaves these
 * streams to the platform; --gc-sections drops them from programs that never print. */
#include <stdio.h>

#include "rtl_io.h"

static int rtl_stdio_put(char c, FILE *stream)
{
    (void)stream;
    RTL_PUTC = (uint8_t)c;
    return (unsigned char)c;
}

static FILE rtl_stdio_out = FDEV_SETUP_STREAM(rtl_stdio_put, NULL, NULL, _FDEV_SETUP_WRITE);

FILE *const stdout = &rtl_stdio_out;
FILE *const stderr = &rtl_stdio_out;
