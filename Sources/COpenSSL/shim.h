#ifndef COPENSSL_SHIM_H
#define COPENSSL_SHIM_H
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <string.h>

/*
 * AES-GCM straight through the default provider's cipher functions (provider-cipher(7)), for
 * the ESP hot path. EVP_EncryptInit_ex / EVP_CIPHER_CTX_ctrl / EVP_*Final in OpenSSL 3 cost about
 * 230 ns per packet whatever its size (the IV length and the tag go through OSSL_PARAM lookups by
 * name on every call); calling the provider's own init/update/final/get-set-params functions does
 * the same cipher work in about 130 ns of fixed cost. Only public API is used: the implementation
 * is the one EVP_CIPHER_fetch picks, and its functions come from OSSL_PROVIDER_query_operation.
 */
typedef struct overlay_gcm_impl {
    void *provctx;
    OSSL_FUNC_cipher_newctx_fn *newctx;
    OSSL_FUNC_cipher_freectx_fn *freectx;
    OSSL_FUNC_cipher_encrypt_init_fn *einit;
    OSSL_FUNC_cipher_decrypt_init_fn *dinit;
    OSSL_FUNC_cipher_update_fn *update;
    OSSL_FUNC_cipher_final_fn *final;
    OSSL_FUNC_cipher_get_ctx_params_fn *get_ctx_params;
    OSSL_FUNC_cipher_set_ctx_params_fn *set_ctx_params;
} overlay_gcm_impl;

/* Fills `out` with the functions of the AES-GCM implementation EVP itself would use for `name`
 * ("AES-128-GCM", ...), when that is OpenSSL's "default" provider (whose parameters this code
 * knows); 1 on success, 0 otherwise (a FIPS-only or engine configuration: the caller then uses
 * EVP). No provider is loaded here: the fetched cipher is kept for the life of the process, which
 * keeps its provider, and so the function pointers, valid. */
static inline int overlay_gcm_lookup(const char *name, overlay_gcm_impl *out) {
    EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, name, NULL);
    if (cipher == NULL) return 0;
    const OSSL_PROVIDER *prov = EVP_CIPHER_get0_provider(cipher);
    const char *pname = prov != NULL ? OSSL_PROVIDER_get0_name(prov) : NULL;
    if (pname == NULL || strcmp(pname, "default") != 0) { EVP_CIPHER_free(cipher); return 0; }
    int no_store = 0;
    const OSSL_ALGORITHM *algs = OSSL_PROVIDER_query_operation(prov, OSSL_OP_CIPHER, &no_store);
    size_t n = strlen(name);
    const OSSL_DISPATCH *d = NULL;
    for (const OSSL_ALGORITHM *alg = algs; alg != NULL && alg->algorithm_names != NULL; alg++) {
        const char *names = alg->algorithm_names;
        if (strncmp(names, name, n) == 0 && (names[n] == ':' || names[n] == '\0')) { d = alg->implementation; break; }
    }
    memset(out, 0, sizeof(*out));
    for (; d != NULL && d->function_id != 0; d++) {
        switch (d->function_id) {
        case OSSL_FUNC_CIPHER_NEWCTX: out->newctx = (OSSL_FUNC_cipher_newctx_fn *)d->function; break;
        case OSSL_FUNC_CIPHER_FREECTX: out->freectx = (OSSL_FUNC_cipher_freectx_fn *)d->function; break;
        case OSSL_FUNC_CIPHER_ENCRYPT_INIT: out->einit = (OSSL_FUNC_cipher_encrypt_init_fn *)d->function; break;
        case OSSL_FUNC_CIPHER_DECRYPT_INIT: out->dinit = (OSSL_FUNC_cipher_decrypt_init_fn *)d->function; break;
        case OSSL_FUNC_CIPHER_UPDATE: out->update = (OSSL_FUNC_cipher_update_fn *)d->function; break;
        case OSSL_FUNC_CIPHER_FINAL: out->final = (OSSL_FUNC_cipher_final_fn *)d->function; break;
        case OSSL_FUNC_CIPHER_GET_CTX_PARAMS: out->get_ctx_params = (OSSL_FUNC_cipher_get_ctx_params_fn *)d->function; break;
        case OSSL_FUNC_CIPHER_SET_CTX_PARAMS: out->set_ctx_params = (OSSL_FUNC_cipher_set_ctx_params_fn *)d->function; break;
        default: break;
        }
    }
    if (algs != NULL) OSSL_PROVIDER_unquery_operation(prov, OSSL_OP_CIPHER, algs);
    out->provctx = OSSL_PROVIDER_get0_provider_ctx(prov);
    int ok = out->newctx && out->freectx && out->einit && out->dinit && out->update && out->final
        && out->get_ctx_params && out->set_ctx_params;
    if (!ok) EVP_CIPHER_free(cipher);
    return ok;
}

/* A cipher context with `key` set for one direction (encrypt 1, decrypt 0); NULL on failure. */
static inline void *overlay_gcm_new(const overlay_gcm_impl *g, const unsigned char *key, size_t keylen, int encrypt) {
    void *ctx = g->newctx(g->provctx);
    if (ctx == NULL) return NULL;
    int ok = encrypt ? g->einit(ctx, key, keylen, NULL, 0, NULL) : g->dinit(ctx, key, keylen, NULL, 0, NULL);
    if (!ok) { g->freectx(ctx); return NULL; }
    return ctx;
}

/* One GCM message whose text lies in up to three pieces: `head` bytes at `out` (in place), then
 * `mid` bytes read from `in` and written after them, then `tail` bytes in place after those.
 * Sealing writes `taglen` tag bytes to `tag`; opening checks them. 1 on success (opening: the tag
 * verified), 0 otherwise. */
static inline int overlay_gcm_run(const overlay_gcm_impl *g, void *ctx, int encrypt, const unsigned char *nonce,
                                  const unsigned char *aad, size_t aadlen, unsigned char *out, size_t head,
                                  const unsigned char *in, size_t mid, size_t tail, unsigned char *tag, size_t taglen) {
    size_t outl = 0;
    int ok = encrypt ? g->einit(ctx, NULL, 0, nonce, 12, NULL) : g->dinit(ctx, NULL, 0, nonce, 12, NULL);
    if (!ok || !g->update(ctx, NULL, &outl, aadlen, aad, aadlen)) return 0;
    if (head > 0 && !g->update(ctx, out, &outl, head, out, head)) return 0;
    if (mid > 0 && !g->update(ctx, out + head, &outl, mid, in, mid)) return 0;
    if (tail > 0 && !g->update(ctx, out + head + mid, &outl, tail, out + head + mid, tail)) return 0;
    OSSL_PARAM p[2] = { OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, taglen), OSSL_PARAM_construct_end() };
    if (encrypt) return g->final(ctx, NULL, &outl, 0) && g->get_ctx_params(ctx, p);
    return g->set_ctx_params(ctx, p) && g->final(ctx, NULL, &outl, 0);
}
#endif
