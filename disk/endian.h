/* Endian-safe loads and stores for on-disk fields (STYLE.md section 6).
 * Built from byte shifts so they work on any alignment and any host order. */
#ifndef VD_ENDIAN_H
#define VD_ENDIAN_H

#include <stdint.h>

static inline uint16_t vd_get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (uint16_t)p[1] << 8);
}

static inline uint32_t vd_get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t vd_get_le64(const uint8_t *p)
{
	return (uint64_t)vd_get_le32(p) | (uint64_t)vd_get_le32(p + 4) << 32;
}

static inline uint16_t vd_get_be16(const uint8_t *p)
{
	return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static inline uint32_t vd_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static inline uint64_t vd_get_be64(const uint8_t *p)
{
	return (uint64_t)vd_get_be32(p) << 32 | (uint64_t)vd_get_be32(p + 4);
}

static inline void vd_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void vd_put_le32(uint8_t *p, uint32_t v)
{
	vd_put_le16(p, (uint16_t)v);
	vd_put_le16(p + 2, (uint16_t)(v >> 16));
}

static inline void vd_put_le64(uint8_t *p, uint64_t v)
{
	vd_put_le32(p, (uint32_t)v);
	vd_put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline void vd_put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void vd_put_be32(uint8_t *p, uint32_t v)
{
	vd_put_be16(p, (uint16_t)(v >> 16));
	vd_put_be16(p + 2, (uint16_t)v);
}

static inline void vd_put_be64(uint8_t *p, uint64_t v)
{
	vd_put_be32(p, (uint32_t)(v >> 32));
	vd_put_be32(p + 4, (uint32_t)v);
}

#endif
