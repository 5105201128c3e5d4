//! The V4L2 ABI of `src/v4l2/sys.rs` checked against the kernel's header: every structure's size,
//! the offsets that differ between ABIs or follow a union or packed member, every ioctl request
//! code, and the control ids and fourccs v4l2rtmp names.
//!
//! The expected values below are the output of this C program, compiled against
//! linux/videodev2.h (Debian 12: linux-libc-dev 6.1 for x86_64, linux-libc-dev-arm64-cross and
//! linux-libc-dev-armhf-cross 6.1.4 for the ARM ABIs) and run natively or under qemu-user:
//!
//! ```text
//! gcc gen.c -o gen && ./gen                                          # X86_64
//! aarch64-linux-gnu-gcc -static gen.c -o gen && qemu-aarch64-static ./gen    # AARCH64
//! arm-linux-gnueabihf-gcc -static gen.c -o gen && qemu-arm-static ./gen      # ARMHF_TIME32
//! arm-linux-gnueabihf-gcc -static -D_FILE_OFFSET_BITS=64 -D_TIME_BITS=64 gen.c -o gen \
//!     && qemu-arm-static ./gen                                       # ARMHF_TIME64
//! ```
//!
//! (gcc 12.2 from Debian's gcc, gcc-aarch64-linux-gnu and gcc-arm-linux-gnueabihf.) The `const`
//! lines are the same for every ABI and are kept once, in COMMON.
//!
//! 32-bit ARM has two layouts of `v4l2_buffer` and `v4l2_event`, with a 32-bit or a 64-bit
//! `time_t` (`struct timeval`/`timespec` inside); the kernel accepts both, telling them apart by
//! the size in the request code. sys.rs takes `timeval` and `timespec` from the libc crate, so
//! the layout follows the C library the binary is built for: Rust's armv7 glibc target has a
//! 32-bit `time_t` (ARMHF_TIME32); a 64-bit one (musl >= 1.2 with libc's time64 support, glibc
//! with `_TIME_BITS=64`) gives ARMHF_TIME64. The test picks the table by the size of `timeval`.
//!
//! ```c
//! #include <stdio.h>
//! #include <stddef.h>
//! #include <sys/ioctl.h>
//! #include <linux/videodev2.h>
//! #define S(t) printf("size %s %zu\n", #t, sizeof(struct t));
//! #define O(t, f) printf("offset %s.%s %zu\n", #t, #f, offsetof(struct t, f));
//! #define I(n) printf("ioctl %s 0x%08lx\n", #n, (unsigned long)(n));
//! #define C(n) printf("const %s 0x%08lx\n", #n, (unsigned long)(n));
//! int main(void) {
//!   C(V4L2_CID_MPEG_VIDEO_BITRATE) C(V4L2_CID_MPEG_VIDEO_BITRATE_MODE) C(V4L2_CID_MPEG_VIDEO_GOP_SIZE)
//!   C(V4L2_CID_MPEG_VIDEO_H264_I_PERIOD) C(V4L2_CID_MPEG_VIDEO_H264_PROFILE) C(V4L2_CID_MPEG_VIDEO_H264_LEVEL)
//!   C(V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER) C(V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME) C(V4L2_CID_MPEG_VIDEO_HEADER_MODE)
//!   C(V4L2_CID_MPEG_VIDEO_PREPEND_SPSPPS_TO_IDR) C(V4L2_CID_MIN_BUFFERS_FOR_CAPTURE) C(V4L2_CID_MIN_BUFFERS_FOR_OUTPUT)
//!   C(V4L2_PIX_FMT_H264) C(V4L2_PIX_FMT_NV12) C(V4L2_PIX_FMT_YUV420) C(V4L2_PIX_FMT_MJPEG) C(V4L2_PIX_FMT_YUYV)
//!   S(v4l2_capability) S(v4l2_fmtdesc) S(v4l2_frmsizeenum) S(v4l2_frmivalenum)
//!   S(v4l2_pix_format) S(v4l2_plane_pix_format) S(v4l2_pix_format_mplane) S(v4l2_format)
//!   S(v4l2_captureparm) S(v4l2_outputparm) S(v4l2_streamparm) S(v4l2_requestbuffers)
//!   S(v4l2_timecode) S(v4l2_plane) S(v4l2_buffer) S(v4l2_exportbuffer) S(v4l2_control)
//!   S(v4l2_queryctrl) S(v4l2_query_ext_ctrl) S(v4l2_querymenu) S(v4l2_ext_control)
//!   S(v4l2_ext_controls) S(v4l2_encoder_cmd) S(v4l2_event) S(v4l2_event_subscription)
//!   O(v4l2_capability, device_caps) O(v4l2_fmtdesc, pixelformat) O(v4l2_frmsizeenum, discrete)
//!   O(v4l2_frmsizeenum, reserved) O(v4l2_frmivalenum, discrete) O(v4l2_frmivalenum, reserved)
//!   O(v4l2_format, fmt) O(v4l2_pix_format_mplane, plane_fmt) O(v4l2_pix_format_mplane, num_planes)
//!   O(v4l2_streamparm, parm) O(v4l2_captureparm, timeperframe) O(v4l2_requestbuffers, capabilities)
//!   O(v4l2_requestbuffers, flags) O(v4l2_plane, m) O(v4l2_plane, data_offset)
//!   O(v4l2_buffer, timestamp) O(v4l2_buffer, timecode) O(v4l2_buffer, sequence) O(v4l2_buffer, memory)
//!   O(v4l2_buffer, m) O(v4l2_buffer, length) O(v4l2_buffer, request_fd) O(v4l2_exportbuffer, fd)
//!   O(v4l2_queryctrl, minimum) O(v4l2_query_ext_ctrl, minimum) O(v4l2_query_ext_ctrl, flags)
//!   O(v4l2_query_ext_ctrl, dims) O(v4l2_querymenu, reserved) O(v4l2_ext_control, value)
//!   O(v4l2_ext_controls, controls) O(v4l2_encoder_cmd, raw) O(v4l2_event, u) O(v4l2_event, pending)
//!   O(v4l2_event, timestamp) O(v4l2_event, id)
//!   I(VIDIOC_QUERYCAP) I(VIDIOC_ENUM_FMT) I(VIDIOC_G_FMT) I(VIDIOC_S_FMT) I(VIDIOC_TRY_FMT)
//!   I(VIDIOC_REQBUFS) I(VIDIOC_QUERYBUF) I(VIDIOC_QBUF) I(VIDIOC_EXPBUF) I(VIDIOC_DQBUF)
//!   I(VIDIOC_STREAMON) I(VIDIOC_STREAMOFF) I(VIDIOC_G_PARM) I(VIDIOC_S_PARM) I(VIDIOC_G_CTRL)
//!   I(VIDIOC_S_CTRL) I(VIDIOC_QUERYCTRL) I(VIDIOC_QUERYMENU) I(VIDIOC_G_EXT_CTRLS)
//!   I(VIDIOC_S_EXT_CTRLS) I(VIDIOC_ENUM_FRAMESIZES) I(VIDIOC_ENUM_FRAMEINTERVALS)
//!   I(VIDIOC_ENCODER_CMD) I(VIDIOC_TRY_ENCODER_CMD) I(VIDIOC_DQEVENT) I(VIDIOC_SUBSCRIBE_EVENT)
//!   I(VIDIOC_UNSUBSCRIBE_EVENT) I(VIDIOC_QUERY_EXT_CTRL)
//!   return 0;
//! }
//! ```

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};

use v4l2rtmp::v4l2::sys::*;
use v4l2rtmp::v4l2::FourCC;

const COMMON: &str = "\
const V4L2_CID_MPEG_VIDEO_BITRATE 0x009909cf
const V4L2_CID_MPEG_VIDEO_BITRATE_MODE 0x009909ce
const V4L2_CID_MPEG_VIDEO_GOP_SIZE 0x009909cb
const V4L2_CID_MPEG_VIDEO_H264_I_PERIOD 0x00990a66
const V4L2_CID_MPEG_VIDEO_H264_PROFILE 0x00990a6b
const V4L2_CID_MPEG_VIDEO_H264_LEVEL 0x00990a67
const V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER 0x009909e2
const V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME 0x009909e5
const V4L2_CID_MPEG_VIDEO_HEADER_MODE 0x009909d8
const V4L2_CID_MPEG_VIDEO_PREPEND_SPSPPS_TO_IDR 0x00990b84
const V4L2_CID_MIN_BUFFERS_FOR_CAPTURE 0x00980927
const V4L2_CID_MIN_BUFFERS_FOR_OUTPUT 0x00980928
const V4L2_PIX_FMT_H264 0x34363248
const V4L2_PIX_FMT_NV12 0x3231564e
const V4L2_PIX_FMT_YUV420 0x32315559
const V4L2_PIX_FMT_MJPEG 0x47504a4d
const V4L2_PIX_FMT_YUYV 0x56595559
";

const X86_64: &str = "\
size v4l2_capability 104
size v4l2_fmtdesc 64
size v4l2_frmsizeenum 44
size v4l2_frmivalenum 52
size v4l2_pix_format 48
size v4l2_plane_pix_format 20
size v4l2_pix_format_mplane 192
size v4l2_format 208
size v4l2_captureparm 40
size v4l2_outputparm 40
size v4l2_streamparm 204
size v4l2_requestbuffers 20
size v4l2_timecode 16
size v4l2_plane 64
size v4l2_buffer 88
size v4l2_exportbuffer 64
size v4l2_control 8
size v4l2_queryctrl 68
size v4l2_query_ext_ctrl 232
size v4l2_querymenu 44
size v4l2_ext_control 20
size v4l2_ext_controls 32
size v4l2_encoder_cmd 40
size v4l2_event 136
size v4l2_event_subscription 32
offset v4l2_capability.device_caps 88
offset v4l2_fmtdesc.pixelformat 44
offset v4l2_frmsizeenum.discrete 12
offset v4l2_frmsizeenum.reserved 36
offset v4l2_frmivalenum.discrete 20
offset v4l2_frmivalenum.reserved 44
offset v4l2_format.fmt 8
offset v4l2_pix_format_mplane.plane_fmt 20
offset v4l2_pix_format_mplane.num_planes 180
offset v4l2_streamparm.parm 4
offset v4l2_captureparm.timeperframe 8
offset v4l2_requestbuffers.capabilities 12
offset v4l2_requestbuffers.flags 16
offset v4l2_plane.m 8
offset v4l2_plane.data_offset 16
offset v4l2_buffer.timestamp 24
offset v4l2_buffer.timecode 40
offset v4l2_buffer.sequence 56
offset v4l2_buffer.memory 60
offset v4l2_buffer.m 64
offset v4l2_buffer.length 72
offset v4l2_buffer.request_fd 80
offset v4l2_exportbuffer.fd 16
offset v4l2_queryctrl.minimum 40
offset v4l2_query_ext_ctrl.minimum 40
offset v4l2_query_ext_ctrl.flags 72
offset v4l2_query_ext_ctrl.dims 88
offset v4l2_querymenu.reserved 40
offset v4l2_ext_control.value 12
offset v4l2_ext_controls.controls 24
offset v4l2_encoder_cmd.raw 8
offset v4l2_event.u 8
offset v4l2_event.pending 72
offset v4l2_event.timestamp 80
offset v4l2_event.id 96
ioctl VIDIOC_QUERYCAP 0x80685600
ioctl VIDIOC_ENUM_FMT 0xc0405602
ioctl VIDIOC_G_FMT 0xc0d05604
ioctl VIDIOC_S_FMT 0xc0d05605
ioctl VIDIOC_TRY_FMT 0xc0d05640
ioctl VIDIOC_REQBUFS 0xc0145608
ioctl VIDIOC_QUERYBUF 0xc0585609
ioctl VIDIOC_QBUF 0xc058560f
ioctl VIDIOC_EXPBUF 0xc0405610
ioctl VIDIOC_DQBUF 0xc0585611
ioctl VIDIOC_STREAMON 0x40045612
ioctl VIDIOC_STREAMOFF 0x40045613
ioctl VIDIOC_G_PARM 0xc0cc5615
ioctl VIDIOC_S_PARM 0xc0cc5616
ioctl VIDIOC_G_CTRL 0xc008561b
ioctl VIDIOC_S_CTRL 0xc008561c
ioctl VIDIOC_QUERYCTRL 0xc0445624
ioctl VIDIOC_QUERYMENU 0xc02c5625
ioctl VIDIOC_G_EXT_CTRLS 0xc0205647
ioctl VIDIOC_S_EXT_CTRLS 0xc0205648
ioctl VIDIOC_ENUM_FRAMESIZES 0xc02c564a
ioctl VIDIOC_ENUM_FRAMEINTERVALS 0xc034564b
ioctl VIDIOC_ENCODER_CMD 0xc028564d
ioctl VIDIOC_TRY_ENCODER_CMD 0xc028564e
ioctl VIDIOC_DQEVENT 0x80885659
ioctl VIDIOC_SUBSCRIBE_EVENT 0x4020565a
ioctl VIDIOC_UNSUBSCRIBE_EVENT 0x4020565b
ioctl VIDIOC_QUERY_EXT_CTRL 0xc0e85667
";

const AARCH64: &str = "\
size v4l2_capability 104
size v4l2_fmtdesc 64
size v4l2_frmsizeenum 44
size v4l2_frmivalenum 52
size v4l2_pix_format 48
size v4l2_plane_pix_format 20
size v4l2_pix_format_mplane 192
size v4l2_format 208
size v4l2_captureparm 40
size v4l2_outputparm 40
size v4l2_streamparm 204
size v4l2_requestbuffers 20
size v4l2_timecode 16
size v4l2_plane 64
size v4l2_buffer 88
size v4l2_exportbuffer 64
size v4l2_control 8
size v4l2_queryctrl 68
size v4l2_query_ext_ctrl 232
size v4l2_querymenu 44
size v4l2_ext_control 20
size v4l2_ext_controls 32
size v4l2_encoder_cmd 40
size v4l2_event 136
size v4l2_event_subscription 32
offset v4l2_capability.device_caps 88
offset v4l2_fmtdesc.pixelformat 44
offset v4l2_frmsizeenum.discrete 12
offset v4l2_frmsizeenum.reserved 36
offset v4l2_frmivalenum.discrete 20
offset v4l2_frmivalenum.reserved 44
offset v4l2_format.fmt 8
offset v4l2_pix_format_mplane.plane_fmt 20
offset v4l2_pix_format_mplane.num_planes 180
offset v4l2_streamparm.parm 4
offset v4l2_captureparm.timeperframe 8
offset v4l2_requestbuffers.capabilities 12
offset v4l2_requestbuffers.flags 16
offset v4l2_plane.m 8
offset v4l2_plane.data_offset 16
offset v4l2_buffer.timestamp 24
offset v4l2_buffer.timecode 40
offset v4l2_buffer.sequence 56
offset v4l2_buffer.memory 60
offset v4l2_buffer.m 64
offset v4l2_buffer.length 72
offset v4l2_buffer.request_fd 80
offset v4l2_exportbuffer.fd 16
offset v4l2_queryctrl.minimum 40
offset v4l2_query_ext_ctrl.minimum 40
offset v4l2_query_ext_ctrl.flags 72
offset v4l2_query_ext_ctrl.dims 88
offset v4l2_querymenu.reserved 40
offset v4l2_ext_control.value 12
offset v4l2_ext_controls.controls 24
offset v4l2_encoder_cmd.raw 8
offset v4l2_event.u 8
offset v4l2_event.pending 72
offset v4l2_event.timestamp 80
offset v4l2_event.id 96
ioctl VIDIOC_QUERYCAP 0x80685600
ioctl VIDIOC_ENUM_FMT 0xc0405602
ioctl VIDIOC_G_FMT 0xc0d05604
ioctl VIDIOC_S_FMT 0xc0d05605
ioctl VIDIOC_TRY_FMT 0xc0d05640
ioctl VIDIOC_REQBUFS 0xc0145608
ioctl VIDIOC_QUERYBUF 0xc0585609
ioctl VIDIOC_QBUF 0xc058560f
ioctl VIDIOC_EXPBUF 0xc0405610
ioctl VIDIOC_DQBUF 0xc0585611
ioctl VIDIOC_STREAMON 0x40045612
ioctl VIDIOC_STREAMOFF 0x40045613
ioctl VIDIOC_G_PARM 0xc0cc5615
ioctl VIDIOC_S_PARM 0xc0cc5616
ioctl VIDIOC_G_CTRL 0xc008561b
ioctl VIDIOC_S_CTRL 0xc008561c
ioctl VIDIOC_QUERYCTRL 0xc0445624
ioctl VIDIOC_QUERYMENU 0xc02c5625
ioctl VIDIOC_G_EXT_CTRLS 0xc0205647
ioctl VIDIOC_S_EXT_CTRLS 0xc0205648
ioctl VIDIOC_ENUM_FRAMESIZES 0xc02c564a
ioctl VIDIOC_ENUM_FRAMEINTERVALS 0xc034564b
ioctl VIDIOC_ENCODER_CMD 0xc028564d
ioctl VIDIOC_TRY_ENCODER_CMD 0xc028564e
ioctl VIDIOC_DQEVENT 0x80885659
ioctl VIDIOC_SUBSCRIBE_EVENT 0x4020565a
ioctl VIDIOC_UNSUBSCRIBE_EVENT 0x4020565b
ioctl VIDIOC_QUERY_EXT_CTRL 0xc0e85667
";

const ARMHF_TIME32: &str = "\
size v4l2_capability 104
size v4l2_fmtdesc 64
size v4l2_frmsizeenum 44
size v4l2_frmivalenum 52
size v4l2_pix_format 48
size v4l2_plane_pix_format 20
size v4l2_pix_format_mplane 192
size v4l2_format 204
size v4l2_captureparm 40
size v4l2_outputparm 40
size v4l2_streamparm 204
size v4l2_requestbuffers 20
size v4l2_timecode 16
size v4l2_plane 60
size v4l2_buffer 68
size v4l2_exportbuffer 64
size v4l2_control 8
size v4l2_queryctrl 68
size v4l2_query_ext_ctrl 232
size v4l2_querymenu 44
size v4l2_ext_control 20
size v4l2_ext_controls 24
size v4l2_encoder_cmd 40
size v4l2_event 128
size v4l2_event_subscription 32
offset v4l2_capability.device_caps 88
offset v4l2_fmtdesc.pixelformat 44
offset v4l2_frmsizeenum.discrete 12
offset v4l2_frmsizeenum.reserved 36
offset v4l2_frmivalenum.discrete 20
offset v4l2_frmivalenum.reserved 44
offset v4l2_format.fmt 4
offset v4l2_pix_format_mplane.plane_fmt 20
offset v4l2_pix_format_mplane.num_planes 180
offset v4l2_streamparm.parm 4
offset v4l2_captureparm.timeperframe 8
offset v4l2_requestbuffers.capabilities 12
offset v4l2_requestbuffers.flags 16
offset v4l2_plane.m 8
offset v4l2_plane.data_offset 12
offset v4l2_buffer.timestamp 20
offset v4l2_buffer.timecode 28
offset v4l2_buffer.sequence 44
offset v4l2_buffer.memory 48
offset v4l2_buffer.m 52
offset v4l2_buffer.length 56
offset v4l2_buffer.request_fd 64
offset v4l2_exportbuffer.fd 16
offset v4l2_queryctrl.minimum 40
offset v4l2_query_ext_ctrl.minimum 40
offset v4l2_query_ext_ctrl.flags 72
offset v4l2_query_ext_ctrl.dims 88
offset v4l2_querymenu.reserved 40
offset v4l2_ext_control.value 12
offset v4l2_ext_controls.controls 20
offset v4l2_encoder_cmd.raw 8
offset v4l2_event.u 8
offset v4l2_event.pending 72
offset v4l2_event.timestamp 80
offset v4l2_event.id 88
ioctl VIDIOC_QUERYCAP 0x80685600
ioctl VIDIOC_ENUM_FMT 0xc0405602
ioctl VIDIOC_G_FMT 0xc0cc5604
ioctl VIDIOC_S_FMT 0xc0cc5605
ioctl VIDIOC_TRY_FMT 0xc0cc5640
ioctl VIDIOC_REQBUFS 0xc0145608
ioctl VIDIOC_QUERYBUF 0xc0445609
ioctl VIDIOC_QBUF 0xc044560f
ioctl VIDIOC_EXPBUF 0xc0405610
ioctl VIDIOC_DQBUF 0xc0445611
ioctl VIDIOC_STREAMON 0x40045612
ioctl VIDIOC_STREAMOFF 0x40045613
ioctl VIDIOC_G_PARM 0xc0cc5615
ioctl VIDIOC_S_PARM 0xc0cc5616
ioctl VIDIOC_G_CTRL 0xc008561b
ioctl VIDIOC_S_CTRL 0xc008561c
ioctl VIDIOC_QUERYCTRL 0xc0445624
ioctl VIDIOC_QUERYMENU 0xc02c5625
ioctl VIDIOC_G_EXT_CTRLS 0xc0185647
ioctl VIDIOC_S_EXT_CTRLS 0xc0185648
ioctl VIDIOC_ENUM_FRAMESIZES 0xc02c564a
ioctl VIDIOC_ENUM_FRAMEINTERVALS 0xc034564b
ioctl VIDIOC_ENCODER_CMD 0xc028564d
ioctl VIDIOC_TRY_ENCODER_CMD 0xc028564e
ioctl VIDIOC_DQEVENT 0x80805659
ioctl VIDIOC_SUBSCRIBE_EVENT 0x4020565a
ioctl VIDIOC_UNSUBSCRIBE_EVENT 0x4020565b
ioctl VIDIOC_QUERY_EXT_CTRL 0xc0e85667
";

const ARMHF_TIME64: &str = "\
size v4l2_capability 104
size v4l2_fmtdesc 64
size v4l2_frmsizeenum 44
size v4l2_frmivalenum 52
size v4l2_pix_format 48
size v4l2_plane_pix_format 20
size v4l2_pix_format_mplane 192
size v4l2_format 204
size v4l2_captureparm 40
size v4l2_outputparm 40
size v4l2_streamparm 204
size v4l2_requestbuffers 20
size v4l2_timecode 16
size v4l2_plane 60
size v4l2_buffer 80
size v4l2_exportbuffer 64
size v4l2_control 8
size v4l2_queryctrl 68
size v4l2_query_ext_ctrl 232
size v4l2_querymenu 44
size v4l2_ext_control 20
size v4l2_ext_controls 24
size v4l2_encoder_cmd 40
size v4l2_event 136
size v4l2_event_subscription 32
offset v4l2_capability.device_caps 88
offset v4l2_fmtdesc.pixelformat 44
offset v4l2_frmsizeenum.discrete 12
offset v4l2_frmsizeenum.reserved 36
offset v4l2_frmivalenum.discrete 20
offset v4l2_frmivalenum.reserved 44
offset v4l2_format.fmt 4
offset v4l2_pix_format_mplane.plane_fmt 20
offset v4l2_pix_format_mplane.num_planes 180
offset v4l2_streamparm.parm 4
offset v4l2_captureparm.timeperframe 8
offset v4l2_requestbuffers.capabilities 12
offset v4l2_requestbuffers.flags 16
offset v4l2_plane.m 8
offset v4l2_plane.data_offset 12
offset v4l2_buffer.timestamp 24
offset v4l2_buffer.timecode 40
offset v4l2_buffer.sequence 56
offset v4l2_buffer.memory 60
offset v4l2_buffer.m 64
offset v4l2_buffer.length 68
offset v4l2_buffer.request_fd 76
offset v4l2_exportbuffer.fd 16
offset v4l2_queryctrl.minimum 40
offset v4l2_query_ext_ctrl.minimum 40
offset v4l2_query_ext_ctrl.flags 72
offset v4l2_query_ext_ctrl.dims 88
offset v4l2_querymenu.reserved 40
offset v4l2_ext_control.value 12
offset v4l2_ext_controls.controls 20
offset v4l2_encoder_cmd.raw 8
offset v4l2_event.u 8
offset v4l2_event.pending 72
offset v4l2_event.timestamp 80
offset v4l2_event.id 96
ioctl VIDIOC_QUERYCAP 0x80685600
ioctl VIDIOC_ENUM_FMT 0xc0405602
ioctl VIDIOC_G_FMT 0xc0cc5604
ioctl VIDIOC_S_FMT 0xc0cc5605
ioctl VIDIOC_TRY_FMT 0xc0cc5640
ioctl VIDIOC_REQBUFS 0xc0145608
ioctl VIDIOC_QUERYBUF 0xc0505609
ioctl VIDIOC_QBUF 0xc050560f
ioctl VIDIOC_EXPBUF 0xc0405610
ioctl VIDIOC_DQBUF 0xc0505611
ioctl VIDIOC_STREAMON 0x40045612
ioctl VIDIOC_STREAMOFF 0x40045613
ioctl VIDIOC_G_PARM 0xc0cc5615
ioctl VIDIOC_S_PARM 0xc0cc5616
ioctl VIDIOC_G_CTRL 0xc008561b
ioctl VIDIOC_S_CTRL 0xc008561c
ioctl VIDIOC_QUERYCTRL 0xc0445624
ioctl VIDIOC_QUERYMENU 0xc02c5625
ioctl VIDIOC_G_EXT_CTRLS 0xc0185647
ioctl VIDIOC_S_EXT_CTRLS 0xc0185648
ioctl VIDIOC_ENUM_FRAMESIZES 0xc02c564a
ioctl VIDIOC_ENUM_FRAMEINTERVALS 0xc034564b
ioctl VIDIOC_ENCODER_CMD 0xc028564d
ioctl VIDIOC_TRY_ENCODER_CMD 0xc028564e
ioctl VIDIOC_DQEVENT 0x80885659
ioctl VIDIOC_SUBSCRIBE_EVENT 0x4020565a
ioctl VIDIOC_UNSUBSCRIBE_EVENT 0x4020565b
ioctl VIDIOC_QUERY_EXT_CTRL 0xc0e85667
";

/// The values of the Rust definitions, keyed like the C program's output.
fn actual() -> BTreeMap<String, u64> {
    let mut values = BTreeMap::new();
    let mut put = |kind: &str, name: &str, value: u64| {
        values.insert(format!("{kind} {name}"), value);
    };
    macro_rules! sizes {
        ($($t:ident),* $(,)?) => { $(put("size", stringify!($t), size_of::<$t>() as u64);)* };
    }
    sizes!(
        v4l2_capability,
        v4l2_fmtdesc,
        v4l2_frmsizeenum,
        v4l2_frmivalenum,
        v4l2_pix_format,
        v4l2_plane_pix_format,
        v4l2_pix_format_mplane,
        v4l2_format,
        v4l2_captureparm,
        v4l2_outputparm,
        v4l2_streamparm,
        v4l2_requestbuffers,
        v4l2_timecode,
        v4l2_plane,
        v4l2_buffer,
        v4l2_exportbuffer,
        v4l2_control,
        v4l2_queryctrl,
        v4l2_query_ext_ctrl,
        v4l2_querymenu,
        v4l2_ext_control,
        v4l2_ext_controls,
        v4l2_encoder_cmd,
        v4l2_event,
        v4l2_event_subscription,
    );
    // (C name, Rust struct, Rust field): anonymous C unions are the field `u` in Rust.
    macro_rules! offsets {
        ($($c:literal => $t:ident . $f:ident),* $(,)?) => {
            $(put("offset", $c, offset_of!($t, $f) as u64);)*
        };
    }
    offsets!(
        "v4l2_capability.device_caps" => v4l2_capability.device_caps,
        "v4l2_fmtdesc.pixelformat" => v4l2_fmtdesc.pixelformat,
        "v4l2_frmsizeenum.discrete" => v4l2_frmsizeenum.u,
        "v4l2_frmsizeenum.reserved" => v4l2_frmsizeenum.reserved,
        "v4l2_frmivalenum.discrete" => v4l2_frmivalenum.u,
        "v4l2_frmivalenum.reserved" => v4l2_frmivalenum.reserved,
        "v4l2_format.fmt" => v4l2_format.fmt,
        "v4l2_pix_format_mplane.plane_fmt" => v4l2_pix_format_mplane.plane_fmt,
        "v4l2_pix_format_mplane.num_planes" => v4l2_pix_format_mplane.num_planes,
        "v4l2_streamparm.parm" => v4l2_streamparm.parm,
        "v4l2_captureparm.timeperframe" => v4l2_captureparm.timeperframe,
        "v4l2_requestbuffers.capabilities" => v4l2_requestbuffers.capabilities,
        "v4l2_requestbuffers.flags" => v4l2_requestbuffers.flags,
        "v4l2_plane.m" => v4l2_plane.m,
        "v4l2_plane.data_offset" => v4l2_plane.data_offset,
        "v4l2_buffer.timestamp" => v4l2_buffer.timestamp,
        "v4l2_buffer.timecode" => v4l2_buffer.timecode,
        "v4l2_buffer.sequence" => v4l2_buffer.sequence,
        "v4l2_buffer.memory" => v4l2_buffer.memory,
        "v4l2_buffer.m" => v4l2_buffer.m,
        "v4l2_buffer.length" => v4l2_buffer.length,
        "v4l2_buffer.request_fd" => v4l2_buffer.request_fd,
        "v4l2_exportbuffer.fd" => v4l2_exportbuffer.fd,
        "v4l2_queryctrl.minimum" => v4l2_queryctrl.minimum,
        "v4l2_query_ext_ctrl.minimum" => v4l2_query_ext_ctrl.minimum,
        "v4l2_query_ext_ctrl.flags" => v4l2_query_ext_ctrl.flags,
        "v4l2_query_ext_ctrl.dims" => v4l2_query_ext_ctrl.dims,
        "v4l2_querymenu.reserved" => v4l2_querymenu.reserved,
        "v4l2_ext_control.value" => v4l2_ext_control.u,
        "v4l2_ext_controls.controls" => v4l2_ext_controls.controls,
        "v4l2_encoder_cmd.raw" => v4l2_encoder_cmd.raw,
        "v4l2_event.u" => v4l2_event.u,
        "v4l2_event.pending" => v4l2_event.pending,
        "v4l2_event.timestamp" => v4l2_event.timestamp,
        "v4l2_event.id" => v4l2_event.id,
    );
    // Request codes are c_ulong (glibc) or c_int (musl); all fit in 32 bits.
    macro_rules! ioctls {
        ($($n:ident),* $(,)?) => { $(put("ioctl", stringify!($n), u64::from($n as u32));)* };
    }
    ioctls!(
        VIDIOC_QUERYCAP,
        VIDIOC_ENUM_FMT,
        VIDIOC_G_FMT,
        VIDIOC_S_FMT,
        VIDIOC_TRY_FMT,
        VIDIOC_REQBUFS,
        VIDIOC_QUERYBUF,
        VIDIOC_QBUF,
        VIDIOC_EXPBUF,
        VIDIOC_DQBUF,
        VIDIOC_STREAMON,
        VIDIOC_STREAMOFF,
        VIDIOC_G_PARM,
        VIDIOC_S_PARM,
        VIDIOC_G_CTRL,
        VIDIOC_S_CTRL,
        VIDIOC_QUERYCTRL,
        VIDIOC_QUERYMENU,
        VIDIOC_G_EXT_CTRLS,
        VIDIOC_S_EXT_CTRLS,
        VIDIOC_ENUM_FRAMESIZES,
        VIDIOC_ENUM_FRAMEINTERVALS,
        VIDIOC_ENCODER_CMD,
        VIDIOC_TRY_ENCODER_CMD,
        VIDIOC_DQEVENT,
        VIDIOC_SUBSCRIBE_EVENT,
        VIDIOC_UNSUBSCRIBE_EVENT,
        VIDIOC_QUERY_EXT_CTRL,
    );
    macro_rules! consts {
        ($($n:ident),* $(,)?) => { $(put("const", stringify!($n), u64::from($n));)* };
    }
    consts!(
        V4L2_CID_MPEG_VIDEO_BITRATE,
        V4L2_CID_MPEG_VIDEO_BITRATE_MODE,
        V4L2_CID_MPEG_VIDEO_GOP_SIZE,
        V4L2_CID_MPEG_VIDEO_H264_I_PERIOD,
        V4L2_CID_MPEG_VIDEO_H264_PROFILE,
        V4L2_CID_MPEG_VIDEO_H264_LEVEL,
        V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER,
        V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME,
        V4L2_CID_MPEG_VIDEO_HEADER_MODE,
        V4L2_CID_MPEG_VIDEO_PREPEND_SPSPPS_TO_IDR,
        V4L2_CID_MIN_BUFFERS_FOR_CAPTURE,
        V4L2_CID_MIN_BUFFERS_FOR_OUTPUT,
    );
    for (name, fourcc) in [
        ("V4L2_PIX_FMT_H264", FourCC::H264),
        ("V4L2_PIX_FMT_NV12", FourCC::NV12),
        ("V4L2_PIX_FMT_YUV420", FourCC::YU12),
        ("V4L2_PIX_FMT_MJPEG", FourCC::MJPG),
        ("V4L2_PIX_FMT_YUYV", FourCC::YUYV),
    ] {
        put("const", name, u64::from(fourcc.0));
    }
    values
}

/// Parses `kind name value` lines (value decimal, or hex with 0x).
fn parse(table: &str) -> BTreeMap<String, u64> {
    table
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 3, "bad table line {line:?}");
            let value = match fields[2].strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => fields[2].parse(),
            }
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            (format!("{} {}", fields[0], fields[1]), value)
        })
        .collect()
}

/// Compares every expected value with the Rust one, and checks that the table covers every
/// Rust definition and nothing else; reports all differences at once.
fn check(abi: &str, table: &str) {
    let mut expected = parse(COMMON);
    expected.extend(parse(table));
    let actual = actual();
    let mut wrong = Vec::new();
    for (key, want) in &expected {
        match actual.get(key) {
            Some(got) if got == want => {}
            Some(got) => wrong.push(format!(
                "{key}: Rust {got:#x} ({got}), C {want:#x} ({want})"
            )),
            None => wrong.push(format!("{key}: in the C table, not checked in Rust")),
        }
    }
    for key in actual.keys().filter(|key| !expected.contains_key(*key)) {
        wrong.push(format!("{key}: checked in Rust, missing from the C table"));
    }
    assert!(
        wrong.is_empty(),
        "{abi}: the V4L2 ABI differs:\n{}",
        wrong.join("\n")
    );
}

#[test]
#[cfg(target_arch = "x86_64")]
fn layout_matches_the_kernel_header_x86_64() {
    check("x86_64", X86_64);
}

#[test]
#[cfg(target_arch = "aarch64")]
fn layout_matches_the_kernel_header_aarch64() {
    check("aarch64", AARCH64);
}

#[test]
#[cfg(target_arch = "arm")]
fn layout_matches_the_kernel_header_armhf() {
    // The libc crate's time_t decides which of the two 32-bit ARM layouts sys.rs has.
    match size_of::<nix::libc::timeval>() {
        8 => check("armhf (32-bit time_t)", ARMHF_TIME32),
        16 => check("armhf (64-bit time_t)", ARMHF_TIME64),
        other => panic!("unexpected timeval size {other}"),
    }
}

/// The tables themselves agree where the ABIs must: all 64-bit tables are identical, and
/// 32-bit ARM differs exactly in the structures holding pointers, `long` or time values.
#[test]
fn the_tables_are_consistent() {
    let x86_64 = parse(X86_64);
    assert_eq!(x86_64, parse(AARCH64));
    let time32 = parse(ARMHF_TIME32);
    let time64 = parse(ARMHF_TIME64);
    assert_eq!(time32.len(), x86_64.len());
    let differing: Vec<&str> = x86_64
        .iter()
        .filter(|(key, value)| time32.get(*key) != Some(value))
        .map(|(key, _)| key.as_str())
        .collect();
    for key in differing {
        assert!(
            [
                "v4l2_format",
                "v4l2_plane",
                "v4l2_buffer",
                "v4l2_ext_controls",
                "v4l2_event"
            ]
            .iter()
            .any(|s| key.contains(s))
                || [
                    "VIDIOC_G_FMT",
                    "VIDIOC_S_FMT",
                    "VIDIOC_TRY_FMT",
                    "BUF",
                    "EXT_CTRLS",
                    "DQEVENT"
                ]
                .iter()
                .any(|s| key.contains(s)),
            "{key} differs between x86_64 and armhf"
        );
    }
    assert_ne!(time32["size v4l2_buffer"], time64["size v4l2_buffer"]);
}
