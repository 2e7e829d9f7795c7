"""Write notebooks/vgg-exercises.ipynb (cells only; run notebooks/execute.py to fill the outputs)."""
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell("""# VGG 一节的练习：用实测数据回答

章节末尾有三道练习。这里的答案都以本机上的实测为依据：逐层的参数、乘加次数和激活内存，
一次前向加反向传播的实际耗时和内存增长，以及不同输入尺寸、不同深度的真实训练结果。"""),
    new_code_cell("""import json
import os
import platform

QUICK = os.environ.get('VGG_QUICK') == '1'  # 测试用：小批量、小尺寸、少量样本

from vgg import (VGG11, VGG13, VGG16, VGG19, load_data_fashion_mnist, narrow, summary, train,
                 try_gpu, vgg)
from vgg.model import alexnet
from vgg.summary import measure_step
import mxnet as mx
from mxnet import gluon, init

ctx = try_gpu()
print('device:', ctx, '|', os.cpu_count(), 'CPU cores |', platform.machine())"""),
    new_markdown_cell("""## 练习 1：为什么 VGG 比 AlexNet 慢得多、占内存多得多？

下面两张表用 `vgg.summary` 逐层列出 VGG-11 和书中的 AlexNet（都是 224×224 的单通道输入、10 类输出）
每层的输出形状、参数个数、乘加次数（每个样本）和输出所占内存（批量为 1）。
之后的对比表再加上实测：一个批量的前向加反向传播耗时（取中位数），以及这一步让进程常驻内存的峰值增加了多少
（在 GPU 上则是这一步之后显存的占用量）。"""),
    new_code_cell("""vgg11_net = vgg(VGG11, 10)
vgg11_net.initialize(ctx=ctx)
vgg11_summary = summary(vgg11_net, (1, 1, 224, 224), ctx=ctx)
print(vgg11_summary)"""),
    new_code_cell("""alex_net = alexnet(10)
alex_net.initialize(ctx=ctx)
alex_summary = summary(alex_net, (1, 1, 224, 224), ctx=ctx)
print(alex_summary)"""),
    new_code_cell("""batch = 2 if QUICK else 16
rows = []
for name, net, s in (('AlexNet', alex_net, alex_summary), ('VGG-11', vgg11_net, vgg11_summary)):
    m = measure_step(net, (batch, 1, 224, 224), ctx=ctx, repeat=2 if QUICK else 3)
    rows.append((name, s.total_params, s.total_macs, s.total_activation_bytes, m))
print('%-8s %12s %16s %15s %15s %14s' % ('net', 'params', 'MACs/example', 'act. MB/example',
                                          'fwd+bwd s/batch', 'step peak MB'))
for name, params, macs, act, m in rows:
    peak = '%.0f' % (m['peak_bytes'] / 1e6) if m['peak_bytes'] is not None else 'n/a'
    print('%-8s %12s %16s %15.1f %15.2f %14s' % (name, f'{params:,}', f'{macs:,}', act / 1e6,
                                               m['seconds'], peak))
(_, p_a, mac_a, act_a, m_a), (_, p_v, mac_v, act_v, m_v) = rows
print('VGG-11 / AlexNet: params %.1fx, MACs %.1fx, activations %.1fx, measured time %.1fx (batch %d)'
      % (p_v / p_a, mac_v / mac_a, act_v / act_a, m_v['seconds'] / m_a['seconds'], batch))"""),
    new_markdown_cell("""**结论（以保存的这次运行为准）：** 两者的参数量在同一数量级（VGG-11 约为 AlexNet 的 2.8 倍，大头都在第一个全连接层），
真正拉开差距的是计算和激活：每个样本的乘加次数约为 8 倍，要保存的激活约为 12 倍。
AlexNet 第一层用 11×11、步幅 4 的卷积一下子把 224×224 缩成 54×54，之后的卷积都在小特征图上做；
VGG 的前几层却在 224×224 和 112×112 的大特征图上做 3×3 卷积，每层的输出还要留到反向传播时使用。
本机实测（批量 16），VGG-11 一次前向加反向传播的耗时约为 AlexNet 的 10 倍，这一步的内存峰值增量约 1.3 GB 对 0.04 GB，
与乘加次数、激活内存的差距是同一量级。"""),
    new_markdown_cell("""## 练习 2：把 Fashion-MNIST 的图像放大到 96 而不是 224

用同一个随机种子、同样的超参数，分别在 96×96 和 224×224 下训练 ratio=4 的 VGG-11 三轮，比较测试准确率和每轮耗时。

224×224、3 轮、种子 0 正是章节笔记本 `vgg.ipynb` 的那次训练，它把结果写进 `notebooks/results/chapter-run.json`。
在 2 核 CPU 上这一组要一个半小时左右，所以只要那份记录存在、设置也对得上，这里就直接读它（表中注明来源），
只重新训练 96×96 的一组；把 `RERUN_224` 改为 `True` 就会在本笔记本里把两组都重新训练一遍。"""),
    new_code_cell("""def run(resize, num_epochs, max_samples=None, conv_arch=None, seed=0):
    mx.random.seed(seed)
    net = vgg(conv_arch or narrow(VGG11, 4), 10)
    net.initialize(init.Xavier(), ctx=ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.05})
    train_iter, test_iter = load_data_fashion_mnist(128, resize=resize, ctx=ctx,
                                                    max_samples=max_samples, seed=seed)
    return net, train(train_iter, test_iter, net, gluon.loss.SoftmaxCrossEntropyLoss(),
                      trainer, ctx, num_epochs)

RERUN_224 = False
CHAPTER_RUN = 'results/chapter-run.json'  # 相对于本笔记本所在的 notebooks/
sizes = (32, 64) if QUICK else (96, 224)
num_epochs, max_samples = (1, 256) if QUICK else (3, None)


# 章节笔记本那次运行的记录；文件不存在或设置不同则返回 None（于是在这里重新训练）
def chapter_run():
    if not os.path.exists(CHAPTER_RUN):
        print(CHAPTER_RUN, 'not found (run vgg.ipynb first): training at 224 here')
        return None
    with open(CHAPTER_RUN) as f:
        record = json.load(f)
    settings = (record['resize'], record['batch_size'], record['lr'], record['ratio'],
                record['seed'], len(record['history']))
    if settings != (224, 128, 0.05, 4, 0, num_epochs):
        print(CHAPTER_RUN, 'has other settings', settings, ': training at 224 here')
        return None
    return record


histories, source = {}, {}
for resize in sizes:
    record = chapter_run() if resize == 224 and not RERUN_224 else None
    if record:
        histories[resize] = record['history']
        source[resize] = 'vgg.ipynb (%s, %s)' % (record['device'], record['processor'])
    else:
        print('resize', resize)
        _, histories[resize] = run(resize, num_epochs, max_samples)
        source[resize] = 'this notebook'
    first_dense_weights = 128 * (resize // 32) ** 2 * 4096
    print('resize %d: last feature map 128 x %d x %d, first Dense layer weights %s'
          % (resize, resize // 32, resize // 32, f'{first_dense_weights:,}'))"""),
    new_code_cell("""print('%6s %10s %14s %16s  %s' % ('resize', 'test acc', 'sec/epoch', 'train img/s', 'run'))
for resize, history in histories.items():
    print('%6d %10.3f %14.1f %16.1f  %s' % (resize, history[-1]['test_acc'],
                                            sum(h['time'] for h in history) / len(history),
                                            sum(h['images_per_sec'] for h in history) / len(history),
                                            source[resize]))"""),
    new_markdown_cell("""**结论：** 输入为 96×96 时，五次减半后最后的特征图只有 3×3（224 时为 7×7），第一个全连接层的输入从 128×7×7=6272 个数
降为 128×3×3=1152 个，权重从约 2569 万个降到约 472 万个（少了约 5.4 倍）；卷积部分的计算量与像素数成正比，约为 224 时的 (96/224)² ≈ 18%。
在保存的这次运行中，96×96 每轮约 554 秒、每秒训练约 114 张，224×224 每轮约 2085 秒、每秒约 30 张（它的前两轮与其他任务共用了 CPU）；
3 轮后的测试准确率是 0.862 对 0.877。放大到 224 多换来 1.5 个百分点，代价是将近 4 倍的时间；原图只有 28×28，放大本身并不带来新的信息。"""),
    new_markdown_cell("""## 练习 3：构造 VGG-16 和 VGG-19

论文表 1 的配置 D、E 就是 `vgg.VGG16`、`vgg.VGG19`。下面先在 ImageNet 的设置下（3 通道 224×224、1000 类）
数出参数量，与论文表 2 的数字（A 133M、B 133M、D 138M、E 144M）对照。"""),
    new_code_cell("""paper = {'VGG-11 (A)': (VGG11, 133), 'VGG-13 (B)': (VGG13, 133),
         'VGG-16 (D)': (VGG16, 138), 'VGG-19 (E)': (VGG19, 144)}
print('%-11s %14s %10s %22s' % ('config', 'params', 'paper (M)', 'Fashion-MNIST ratio 4'))
for name, (arch, paper_millions) in paper.items():
    big = summary(vgg(arch, 1000), (1, 3, 224, 224)).total_params
    small = summary(vgg(narrow(arch, 4), 10), (1, 1, 224, 224)).total_params
    print('%-11s %14s %10d %22s' % (name, f'{big:,}', paper_millions, f'{small:,}'))"""),
    new_code_cell("""net16 = vgg(VGG16, 10)
net16.initialize()
X = mx.nd.random.uniform(shape=(1, 1, 224, 224))
for blk in net16:
    X = blk(X)
    print(blk.name, 'output shape:\\t', X.shape)"""),
    new_markdown_cell("""再用一次短训练比较 ratio=4 的 VGG-16 与 VGG-11（96×96 输入，1 轮，同一随机种子）。
同一随机种子、同样的数据和设置、学习率也不随轮数变化，所以一轮训练的 VGG-11 就是练习 2 里 96×96 那次运行的第 1 轮，
这里直接取用，不再训练一次。"""),
    new_code_cell("""resize = sizes[0]
short = {'VGG-11': histories[resize][:1]}
print('VGG-16')
_, short['VGG-16'] = run(resize, 1, max_samples, conv_arch=narrow(VGG16, 4))
for name, history in short.items():
    print('%-7s test acc %.3f, %.1f sec, %.1f train img/s'
          % (name, history[-1]['test_acc'], history[-1]['time'], history[-1]['images_per_sec']))"""),
    new_markdown_cell("""**结论：** 四个配置的参数量与论文表 2 相符（按百万取整）。改成单通道输入、10 类输出并把通道数除以 4 之后，四个网络都只有约 4300 万个参数，
而且大部分在全连接层，所以加深卷积部分几乎不增加参数。训练的表现却不一样：在保存的这次运行中，同样的学习率 0.05、同样一轮，
VGG-11 的测试准确率到了 0.768，VGG-16 的训练损失却停在 2.30 左右（ln 10 ≈ 2.303，等于对 10 类均匀猜测），测试准确率 0.100。
没有批量归一化的深层 VGG 从随机初始化出发很难起步；论文训练更深的配置时，也是先拿训练好的配置 A 的参数去初始化前几层卷积和最后的全连接层。
想让 VGG-16 学起来，可以试试更小的学习率、更多轮，或者在每个卷积层后加批量归一化。"""),
]

nb = new_notebook(cells=cells, metadata={
    'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
    'language_info': {'name': 'python'}})
nbformat.write(nb, 'notebooks/vgg-exercises.ipynb')
