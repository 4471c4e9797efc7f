#include "config.h"

/* tlsspeed -- how fast this machine's mbedTLS decrypts TLS records, per AEAD cipher.
 *
 *   bench_tlsspeed [MIB]
 *
 * For AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305 (the ciphers of the suites pop3 offers
 * first), decrypts and authenticates full-size TLS records (16 KiB plaintext, 8-byte explicit
 * nonce as TLS 1.2 sends it, 13-byte additional data, 16-byte tag) for MIB mebibytes (default
 * 256) and prints one line per cipher: "NAME MB/s" (MB = 10^6 bytes of plaintext). The
 * benchmark uses it as the rate at which our client can possibly decrypt a TLS stream: a
 * bound that only the cipher sets, measured on the same machine in the same run.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mbedtls/cipher.h"

#define RECORD 16384

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Returns MB/s, or a negative number when the cipher is missing or fails. */
static double measure(mbedtls_cipher_type_t type, size_t keybits, size_t total) {
  const mbedtls_cipher_info_t *info = mbedtls_cipher_info_from_type(type);
  mbedtls_cipher_context_t enc, dec;
  unsigned char key[32], iv[12], ad[13];
  /* The _ext API keeps the tag after the ciphertext. */
  unsigned char *plain = malloc(RECORD), *cipher = malloc(RECORD + 16), *out = malloc(RECORD);
  size_t olen, i, n = total / RECORD;
  double t0, t1 = -1;

  if (info == NULL || plain == NULL || cipher == NULL || out == NULL) {
    free(plain);
    free(cipher);
    free(out);
    return -1;
  }
  memset(key, 0x42, sizeof(key));
  memset(iv, 0x17, sizeof(iv));
  memset(ad, 0x23, sizeof(ad));
  for (i = 0; i < RECORD; i++)
    plain[i] = (unsigned char)(i * 131 + 7);
  mbedtls_cipher_init(&enc);
  mbedtls_cipher_init(&dec);
  if (mbedtls_cipher_setup(&enc, info) != 0 || mbedtls_cipher_setup(&dec, info) != 0 ||
      mbedtls_cipher_setkey(&enc, key, (int)keybits, MBEDTLS_ENCRYPT) != 0 ||
      mbedtls_cipher_setkey(&dec, key, (int)keybits, MBEDTLS_DECRYPT) != 0 ||
      mbedtls_cipher_auth_encrypt_ext(&enc, iv, sizeof(iv), ad, sizeof(ad), plain, RECORD, cipher,
                                      RECORD + 16, &olen, 16) != 0)
    goto done;
  t0 = now_s();
  for (i = 0; i < n; i++) {
    if (mbedtls_cipher_auth_decrypt_ext(&dec, iv, sizeof(iv), ad, sizeof(ad), cipher, RECORD + 16,
                                        out, RECORD, &olen, 16) != 0 ||
        olen != RECORD)
      goto done;
  }
  t1 = now_s() - t0;
  if (memcmp(out, plain, RECORD) != 0)
    t1 = -1;
done:
  mbedtls_cipher_free(&enc);
  mbedtls_cipher_free(&dec);
  free(plain);
  free(cipher);
  free(out);
  return t1 > 0 ? (double)(n * RECORD) / t1 / 1e6 : -1;
}

int main(int argc, char **argv) {
  static const struct {
    const char *name;
    mbedtls_cipher_type_t type;
    size_t bits;
  } ciphers[] = {
      {"AES-128-GCM", MBEDTLS_CIPHER_AES_128_GCM, 128},
      {"AES-256-GCM", MBEDTLS_CIPHER_AES_256_GCM, 256},
      {"CHACHA20-POLY1305", MBEDTLS_CIPHER_CHACHA20_POLY1305, 256},
  };
  long mib = 256;
  int status = 0;

  if (argc > 2 || (argc == 2 && ((mib = strtol(argv[1], NULL, 10)) < 1 || mib > 65536))) {
    fprintf(stderr, "usage: bench_tlsspeed [MIB]\n");
    return 64;
  }
  for (size_t i = 0; i < sizeof(ciphers) / sizeof(ciphers[0]); i++) {
    double r = measure(ciphers[i].type, ciphers[i].bits, (size_t)mib << 20);
    if (r < 0) {
      printf("%s unavailable\n", ciphers[i].name);
      status = 1;
    } else {
      printf("%s %.1f\n", ciphers[i].name, r);
    }
  }
  return status;
}
